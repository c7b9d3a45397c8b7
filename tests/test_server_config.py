"""Server settings end to end: initializationOptions, workspace/configuration,
didChangeConfiguration, invalid values, model reloads, a missing model; the
UTF-8 position encoding; the TCP transport."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import time

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from conftest import SERVER_CMD, TEST_COMPLETER, Doc, index_of, start_server, stats, stop_server, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOURCE = textwrap.dedent("""\
    import os


    def config_dir(home):
        path = os.path.join(home, ".config")
        if not os.path.isdir(path):
            os.makedirs(path)
        return 
    """)
CURSOR = SOURCE.index("return ") + len("return ")


async def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met")


def warnings_of(client):
    return [m.message for m in client.messages if m.type == types.MessageType.Warning]


async def test_settings_layers_and_changes(model_settings):
    """initializationOptions, then the pulled `anycode` section over them; invalid
    values warn and fall back; didChangeConfiguration re-reads; only device,
    modelPath and threads reload the model."""
    client = await start_server(
        {"anycode": {"maxItems": 2, "beamSize": 99, **model_settings}},
        config={"timeBudgetMs": 1500, "device": "tpu", "threads": 1})
    try:
        st = await stats(client)
        assert (st.settings.maxItems, st.settings.beamSize, st.settings.timeBudgetMs,
                st.settings.device, st.settings.threads) == (2, 5, 1500, "auto", 1)
        warned = warnings_of(client)
        assert any("anycode.beamSize" in w and "99" in w for w in warned), warned
        assert any("anycode.device" in w and "tpu" in w for w in warned), warned
        doc = Doc(client, "file:///work/cfg.py", SOURCE)
        result = await doc.complete(CURSOR)
        assert len(result.items) <= 2, [it.label for it in result.items]

        # a change the model does not care about: no reload
        client.set_configuration({"maxItems": 1, "beamSize": "wide", "timeBudgetMs": 2.0, "threads": 1},
                                section="anycode")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        st = await wait_for(lambda: _settings_match(client, maxItems=1))
        assert st.loads == 1 and st.settings.timeBudgetMs == 2 and st.settings.beamSize == 5
        assert any("anycode.beamSize" in w and "wide" in w for w in warnings_of(client))
        client.set_configuration({"maxItems": 1, "timeBudgetMs": 2000, "threads": 1}, section="anycode")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await wait_for(lambda: _settings_match(client, timeBudgetMs=2000))
        doc.edit(CURSOR, CURSOR, "")
        assert len((await doc.complete(CURSOR)).items) <= 1

        # device: the model reloads, with progress and status
        n = len(client.statuses)
        client.set_configuration({"maxItems": 1, "device": "cpu", "threads": 1}, section="anycode")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await wait_status(client, ("loading",), after=n)
        i = next(k for k in range(n, len(client.statuses)) if client.statuses[k].state == "loading")
        ready = await wait_status(client, ("ready",), after=i)
        assert ready.device == "cpu"
        st = await stats(client)
        assert st.loads == 2 and st.settings.device == "cpu" and st.state == "ready"
        loads = [k for k in client.progress_reports if str(k).startswith("anycode-load")]
        assert len(loads) == 2
    finally:
        await stop_server(client)


async def _settings_match(client, **want):
    st = await stats(client)
    return st if all(getattr(st.settings, k) == v for k, v in want.items()) else None


async def test_missing_model_path(model_settings, tmp_path):
    """A model path with nothing there: a clear error message, status `error`, empty
    answers; the server stays up, and pointing it at a model makes it work."""
    missing = tmp_path / "no-such-model"
    client = await start_server({"modelPath": str(missing)})
    try:
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1 and str(missing) in errors[0], errors
        assert client.statuses[-1].state == "error" and str(missing) in client.statuses[-1].message
        doc = Doc(client, "file:///work/missing.py", SOURCE)
        t = time.monotonic()
        assert list((await doc.complete(CURSOR)).items) == []
        assert list((await doc.inline(CURSOR)).items) == []
        assert time.monotonic() - t < 1.0
        assert (await stats(client)).state == "error"

        n = len(client.statuses)
        client.set_configuration({"modelPath": model_settings.get("modelPath", "")}, section="anycode")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        await wait_status(client, ("ready",), after=n)
        doc.edit(CURSOR, CURSOR, "")
        result = await doc.complete(CURSOR)
        assert result.is_incomplete is True
        assert (await stats(client)).state == "ready"

        # a device this machine does not have: an error, then back to working
        import onnxruntime
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            n = len(client.messages)
            working = {"modelPath": model_settings.get("modelPath", "")}   # over the missing one
            client.set_configuration({**working, "device": "cuda"}, section="anycode")
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
            err = await wait_status(client, ("error",), after=len(client.statuses))
            assert "cuda" in err.message.lower()
            assert any(m.type == types.MessageType.Error and "cuda" in m.message.lower()
                       for m in client.messages[n:])
            client.set_configuration({**working, "device": "auto"}, section="anycode")
            client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
            await wait_status(client, ("ready",), after=len(client.statuses))
    finally:
        await stop_server(client)


async def test_answers_from_the_cpu_while_the_model_loads_on_the_gpu(model_settings):
    """Where the model loads on the GPU (seconds), the server answers from a CPU completer meanwhile
    and then swaps; the load's progress ends only then.  The GPU load is tests/slow_device.py: the
    real model, loaded after a delay (CI has no GPU)."""
    if TEST_COMPLETER:
        pytest.skip("the server runs another completer")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    client = await start_server({"anycode": model_settings}, wait=False,
                                args=("--completer", "slow_device:make_completer"), env=env)
    try:
        interim = await wait_status(client, ("ready", "error"))
        assert interim.state == "ready" and "while the model loads on the GPU" in interim.message, interim
        assert interim.device == "cpu" and interim.interim is True
        doc = Doc(client, "file:///work/early.py", SOURCE)
        result = await doc.complete(CURSOR)
        assert result.items, "no answer from the CPU while the GPU model loads"
        assert all(st.device != "slow-device" for st in client.statuses)     # answered before the swap
        loads = [v for k, v in client.progress_reports.items() if str(k).startswith("anycode-load")]
        assert [[r.kind for r in reports] for reports in loads] == [["begin"]]     # still loading

        final = await wait_for(lambda: _device_status(client, "slow-device"), timeout=60)
        assert final.state == "ready" and final.message.startswith("model loaded"), final
        assert getattr(final, "interim", None) is None
        doc.edit(CURSOR, CURSOR, "")
        assert (await doc.complete(CURSOR)).items
        assert (await stats(client)).device == "slow-device"
        assert [[r.kind for r in reports] for reports in loads] == [["begin", "end"]]
    finally:
        await stop_server(client)


async def test_a_request_while_the_model_loads_is_answered_once_it_is_there(model_settings):
    """A request that arrives while the model loads, for longer than the time budget, with nothing
    to answer from meanwhile: it waits for the model and then has its whole budget, so the first
    request of a session answers rather than coming back empty.  One superseded while it waits is
    cancelled at once, not when the model is there."""
    if TEST_COMPLETER:
        pytest.skip("the server runs another completer")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
               ANYCODE_SLOW_LOAD_SECONDS="3")
    client = await start_server({"anycode": {**model_settings, "timeBudgetMs": 300}}, wait=False,
                                args=("--completer", "slow_device:make_slow_cpu"), env=env)
    try:
        await wait_status(client, ("loading",))
        doc = Doc(client, "file:///work/first.py", SOURCE)
        first = doc.send_completion(CURSOR)
        await asyncio.sleep(0.5)
        assert not first.done() and client.statuses[-1].state == "loading"
        doc.edit(CURSOR, CURSOR, "p")               # the user types on: the waiting request is superseded
        t = time.monotonic()
        with pytest.raises(JsonRpcRequestCancelled):
            await first
        assert time.monotonic() - t < 1.0
        result = await doc.complete(CURSOR + 1)     # asked while still loading, answered once loaded
        assert client.statuses[-1].state == "ready"
        assert result.items, "the request made while the model loaded came back empty"
        assert all(it.text_edit.new_text.startswith("p") for it in result.items), result.items
    finally:
        await stop_server(client)


async def test_a_gpu_load_that_ends_on_the_cpu_keeps_the_interim_completer(model_settings):
    """onnxruntime-gpu without a usable GPU: the load meant for the GPU comes back on the CPU; the
    server keeps the completer it made for the CPU, says so, and goes on answering."""
    if TEST_COMPLETER:
        pytest.skip("the server runs another completer")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
               ANYCODE_SLOW_LOAD_SECONDS="0.5")
    client = await start_server({"anycode": model_settings}, wait=False,
                                args=("--completer", "slow_device:make_cpu_fallback"), env=env)
    try:
        await wait_status(client, ("ready",))
        final = await wait_for(lambda: _final_status(client), timeout=60)
        assert final.state == "ready" and final.device == "cpu"
        assert any("no usable GPU" in m.message for m in client.log_messages)
        doc = Doc(client, "file:///work/fallback.py", SOURCE)
        assert (await doc.complete(CURSOR)).items
    finally:
        await stop_server(client)


async def _final_status(client):
    return next((st for st in client.statuses if st.state == "ready" and getattr(st, "interim", None) is None),
                None)


async def _device_status(client, device):
    return next((st for st in client.statuses if st.device == device), None)


async def test_pushed_settings_without_pull(model_settings):
    """A client without workspace/configuration pushes settings in didChangeConfiguration."""
    caps = types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=False))
    client = await start_server(model_settings, capabilities=caps)
    try:
        assert client.progress_reports == {}
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"anycode": {"maxItems": 3, "timeBudgetMs": 700, **model_settings}}))
        st = await wait_for(lambda: _settings_match(client, maxItems=3))
        assert st.settings.timeBudgetMs == 700 and st.loads == 1
    finally:
        await stop_server(client)


async def test_utf8_positions(model_settings):
    """A client that offers UTF-8 gets it: positions and ranges count bytes."""
    client = await start_server({**model_settings, "timeBudgetMs": 2000}, utf8=True)
    try:
        assert client.init_result.capabilities.position_encoding == "utf-8"
        text = textwrap.dedent("""\
            def greet(名前, émoji="😀"):
                message = "héllo 😀 " + 名前
                return message + émoji
            """)
        cursor = text.index("émoji\n")
        text = text[:cursor + 1] + text[cursor + len("émoji"):]  # "é" typed
        doc = Doc(client, "file:///work/utf8.py", text, encoding="utf-8")
        assert doc.pos(cursor + 1).character == len("    return message + é".encode())
        result = await doc.complete(cursor + 1)
        for it in result.items:
            rng = it.text_edit.range
            a = index_of(text, rng.start, "utf-8")
            assert a <= cursor and rng.end == doc.pos(cursor + 1)
            assert it.text_edit.new_text.startswith(text[a:cursor + 1])
    finally:
        await stop_server(client)


def _frame(msg: dict) -> bytes:
    body = json.dumps(msg).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_frame(f) -> dict:
    length = None
    while True:
        line = f.readline()
        assert line, "connection closed"
        if not line.strip():
            if length is not None:
                return json.loads(f.read(length))
            continue
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])


async def test_tcp_transport():
    """`anycode serve --tcp HOST:PORT` speaks the same LSP on a socket."""
    await asyncio.to_thread(_tcp_session)


def _tcp_session():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(SERVER_CMD + ["--tcp", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=20)
                break
            except OSError:
                assert time.monotonic() < end and proc.poll() is None, "the server did not listen"
                time.sleep(0.1)
        with conn, conn.makefile("rb") as f:
            conn.sendall(_frame({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                 "params": {"processId": None, "rootUri": None, "capabilities": {}}}))
            while (msg := _read_frame(f)).get("id") != 1:
                pass
            assert msg["result"]["serverInfo"]["name"] == "anycode"
            assert "completionProvider" in msg["result"]["capabilities"]
            conn.sendall(_frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
            while (msg := _read_frame(f)).get("id") != 2:
                pass
            conn.sendall(_frame({"jsonrpc": "2.0", "method": "exit"}))
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()


async def test_request_before_the_model_is_ready(model_settings):
    """A completion that comes while the model loads waits for the load, however short its time
    budget (the budget is the completion's, not the load's), and runs the model once it is there."""
    client = await start_server({**model_settings, "timeBudgetMs": 1}, wait=False)
    try:
        doc = Doc(client, "file:///work/early.py", SOURCE)
        result = await doc.complete(CURSOR)
        assert client.statuses and client.statuses[-1].state == "ready"  # it waited for the load
        assert result.is_incomplete is True
        assert (await stats(client)).modelRuns == 1
    finally:
        await stop_server(client)


async def test_command_line_gives_defaults_that_client_settings_override(model_settings):
    """`anycode serve --time-budget-ms ... --max-items ...` for clients that send no settings
    (holebench, scripts); the client's own settings still win, and bad values fall back."""
    client = await start_server({"anycode": {"maxItems": 4, **model_settings}},
                                args=("--time-budget-ms", "2500", "--max-items", "2", "--beam-size", "0"))
    try:
        st = await stats(client)
        assert (st.settings.timeBudgetMs, st.settings.maxItems, st.settings.beamSize) == (2500, 4, 5)
    finally:
        await stop_server(client)
