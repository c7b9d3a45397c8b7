"""The protocol layer against a hostile client, through a real `anycode serve` process and raw
bytes on its stdio (tests/rawclient.py): broken frames, bodies that are not JSON-RPC, the
lifecycle (initialize, shutdown, exit) and the exit codes.  Every case here once broke the server
(issue 20)."""
from __future__ import annotations

import json
import os
import time

import pytest
from rawclient import INITIALIZE_PARAMS, RawServer, frame, notification, request

STATS = "anycode/stats"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
NOT_INITIALIZED = -32002
TESTS = os.path.dirname(os.path.abspath(__file__))


def fault_lines(server: RawServer) -> list[bytes]:
    """The server's log lines about protocol faults (one per fault)."""
    return [line for line in server.stderr.splitlines() if b"anycode.jsonrpc" in line]


def assert_three_answered(server: RawServer, first_id: int) -> None:
    for k in range(3):
        server.send(request(first_id + k, STATS, {}))
    for k in range(3):
        assert "result" in server.answer(first_id + k, timeout=15), f"request {first_id + k} lost"


BODY = request(100, STATS, {})
RAW = json.dumps(BODY).encode()

BROKEN_FRAMES = {
    "ten bytes short": frame(BODY, length=len(RAW) - 10),
    "ten bytes long": frame(BODY, length=len(RAW) + 10),
    "length not a number": b"Content-Length: abc\r\n\r\n" + RAW,
    "negative length": b"Content-Length: -5\r\n\r\n" + RAW,
    "only content-type": b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" + RAW,
    "a body without header": RAW,
    "garbage line": b"hello there\r\n",
    "huge length": b"Content-Length: 1000000000000000\r\n\r\n",
    "huge length with body": b"Content-Length: 1000000000000000\r\n\r\n" + RAW,
}


@pytest.mark.parametrize("kind", list(BROKEN_FRAMES))
def test_no_message_is_lost_after_a_broken_frame(kind):
    """After any broken frame the reader resynchronises on the next Content-Length header: the
    three valid requests that follow are answered, and the server logs the fault in one line."""
    with RawServer() as server:
        server.initialize()
        server.send(BROKEN_FRAMES[kind])
        assert_three_answered(server, 1)
        assert server.proc.poll() is None
        server.call(9, "shutdown")
        server.send(notification("exit"))
        assert server.wait_exit() == 0
        assert b"Traceback" not in server.stderr, server.stderr.decode()[-3000:]
        assert fault_lines(server), "the fault was not logged"


def test_header_names_in_any_case():
    with RawServer() as server:
        server.initialize()
        server.send(frame(request(1, STATS, {}), name=b"content-length"))
        server.send(frame(request(2, STATS, {}), name=b"CONTENT-LENGTH"))
        server.send(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
                    + frame(request(3, STATS, {}), name=b"Content-length"))
        for k in (1, 2, 3):
            assert "result" in server.answer(k, timeout=15)


def test_an_oversized_frame_is_read_through_and_answered():
    """A frame over --max-message-bytes is discarded as it streams in (never held in memory) and
    its request answered with an error; the next message is served."""
    with RawServer("--max-message-bytes", "4096") as server:
        server.initialize()
        big = request(7, STATS, {"padding": "x" * 10000})
        server.send(frame(big))
        error = server.answer(7)["error"]
        assert error["code"] == INVALID_REQUEST and "4096" in error["message"], error
        assert "result" in server.call(8, STATS, {})
        assert len(fault_lines(server)) == 1, server.stderr.decode()


def test_parse_and_invalid_request_errors():
    """-32700 for bodies that are not JSON, -32600 for JSON that is not a request, each logged in
    one line, never a traceback; a request without params is accepted.  A body cut short is
    answered with its id when its head names one (JSON-RPC's null id leaves a client waiting)."""
    with RawServer() as server:
        server.initialize()
        cases = [
            (b'{"jsonrpc": "2.0", "id": 1, "method": ', PARSE_ERROR, 1),   # the id, read from the head
            (b'{"jsonrpc": "2.0", "id": 2, "method": "anycode/stats", "params": {"x": "\xff"}}', PARSE_ERROR, 2),
            (b'{"jsonrpc": "2.0", "method": "anycode/stats", ', PARSE_ERROR, None),
            (b'{"id": 3, "method": "anycode/stats", "params": {}}', INVALID_REQUEST, 3),
            (b'{"jsonrpc": "2.0", "id": 4, "params": {}}', INVALID_REQUEST, 4),
            (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "anycode/stats", "params": {}}', INVALID_REQUEST, None),
            (b'[1, 2, 3]', INVALID_REQUEST, None),
            (b'{"jsonrpc": "2.0", "id": 6, "method": 42}', INVALID_REQUEST, 6),
            (b'{"jsonrpc": "2.0", "id": 7, "method": "textDocument/completion"}', INVALID_PARAMS, 7),
            (b'{"jsonrpc": "2.0", "id": 8, "method": "anycode/noSuchMethod", "params": {}}', METHOD_NOT_FOUND, 8),
        ]
        errors = []
        for k, (body, code, msg_id) in enumerate(cases):
            # each answered before the next is sent: null ids are told apart by order
            seen = len(server.messages)
            server.send(frame(body))
            msg = server.wait_for(lambda m, s=seen: "error" in m and "method" not in m
                                  and m in server.messages[s:], timeout=15)
            errors.append((msg["error"]["code"], msg.get("id")))
            assert errors[-1] == (code, msg_id), (k, body, msg)
        ok = server.call(20, STATS)          # no params member: JSON-RPC allows it
        assert "result" in ok, ok
        assert "result" in server.call(21, STATS, {})
        assert b"Traceback" not in server.stderr, server.stderr.decode()[-3000:]
        # -32601 is an ordinary answer, not a fault of the client's framing: the others log one line each
        assert len(fault_lines(server)) == len(cases) - 1, server.stderr.decode()


def test_lifecycle_errors():
    """-32002 before initialize (notifications dropped), -32600 for a second initialize and for any
    request after shutdown."""
    with RawServer() as server:
        server.send(request(1, "textDocument/completion", {
            "textDocument": {"uri": "file:///a.py"}, "position": {"line": 0, "character": 0}}))
        assert server.answer(1)["error"]["code"] == NOT_INITIALIZED
        server.send(request(2, STATS, {}))
        assert server.answer(2)["error"]["code"] == NOT_INITIALIZED
        assert "result" in server.initialize()
        assert server.call(3, "initialize", INITIALIZE_PARAMS)["error"]["code"] == INVALID_REQUEST
        assert "result" in server.call(4, STATS, {})
        assert "error" not in server.call(5, "shutdown")
        assert server.call(6, STATS, {})["error"]["code"] == INVALID_REQUEST
        assert server.call(7, "shutdown")["error"]["code"] == INVALID_REQUEST
        server.send(notification("exit"))
        assert server.wait_exit() == 0
        assert b"Traceback" not in server.stderr, server.stderr.decode()[-3000:]


def test_exit_without_shutdown_is_an_error():
    with RawServer() as server:
        server.initialize()
        assert "result" in server.call(1, STATS, {})
        server.send(notification("exit"))
        assert server.wait_exit() == 1


def test_exit_before_initialize():
    with RawServer() as server:
        server.send(notification("exit"))
        assert server.wait_exit() == 1


def test_end_of_input_ends_the_server():
    with RawServer() as server:
        server.initialize()
        server.call(1, "shutdown")
        server.proc.stdin.close()
        assert server.wait_exit() == 0


def test_exit_while_the_model_loads_is_prompt_and_quiet():
    """`exit` while the model is still loading (a load that takes 30 s) ends the process at once,
    without a word on stderr."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])),
           "ANYCODE_SLOW_LOAD_SECONDS": "30"}
    with RawServer("--completer", "slow_device:make_completer", env=env) as server:
        server.initialize()
        server.wait_for(lambda m: m.get("method") == "anycode/status" and m["params"]["state"] == "loading")
        server.call(1, "shutdown")
        t = time.monotonic()
        server.send(notification("exit"))
        assert server.wait_exit(timeout=20) == 0
        assert time.monotonic() - t < 2.0
        assert len(server.stderr) < 2000, server.stderr.decode()[-3000:]
    with RawServer("--completer", "slow_device:make_completer", env=env) as server:
        server.initialize()
        server.wait_for(lambda m: m.get("method") == "anycode/status" and m["params"]["state"] == "loading")
        t = time.monotonic()
        server.send(notification("exit"))
        assert server.wait_exit(timeout=20) == 1
        assert time.monotonic() - t < 2.0
        assert b"Traceback" not in server.stderr and len(server.stderr) < 2000, server.stderr.decode()[-3000:]
