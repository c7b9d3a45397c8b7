"""The wire under the language server: framing, JSON-RPC validation and the LSP lifecycle, built
so that no client can break the server.

Why not pygls's own loop: pygls 2.x reads messages in `pygls.io_.run_async`, a module function
that `JsonRPCServer.start_io` / `start_tcp` call directly, with its header regex
(`^Content-Length: (\\d+)\\r\\n$`, case sensitive), an unbounded `readexactly(length)` and a
traceback for every body it cannot handle.  It offers no hook for any of that, so `serve` runs
this module's reader instead and hands each message to pygls's protocol object, whose public
parts (`structure_message`, `handle_message`, `_send_response`) do the rest.

* `FrameReader` cuts a byte stream into messages: header names in any case; a Content-Length
  over `max_bytes()` is read through in chunks and discarded (never held), answered with an
  error when its head names an id; after a broken frame (a wrong or missing length, junk
  between frames, a body that is not JSON) it resynchronises on the next Content-Length header,
  so no later message is lost.  A body is JSON, which never holds a raw line break inside a
  string, so "Content-Length: N" followed by a line end never occurs inside a valid body: seeing
  one means the previous frame lied about its length.
* `SafeProtocol` answers what JSON-RPC and LSP say: -32700 for a body that is not JSON, -32600
  for JSON that is not a request (and for requests after shutdown or a second initialize),
  -32002 before initialize, -32601 for unknown methods, -32602 for params that do not fit;
  a request without params is accepted.  Each fault is logged once, as one line.
* `exit` ends the process at once (the model may be loading in a thread that cannot be
  interrupted) with 0 after shutdown and 1 otherwise, as the spec says; so does the end of input.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger("anycode.jsonrpc")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
SERVER_NOT_INITIALIZED = -32002

READ_SIZE = 1 << 20
MAX_HEADER_LINE = 8192          # junk without a line end is dropped in pieces of this size
OVERLAP = 64                    # bytes kept across chunk boundaries: a header is shorter
HEAD_BYTES = 1 << 16            # where an oversized or broken body's id is looked for

_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\S*)[ \t]*\Z", re.I)
_OTHER_HEADER = re.compile(rb"[A-Za-z0-9-]+[ \t]*:")
_RESYNC = re.compile(rb"content-length[ \t]*:[ \t]*\d+[ \t]*\r?\n", re.I)  # a header line, inside a body
_ID_VALUE = re.compile(r'\s*:\s*(-?\d+(?![\d.eE])|"(?:[^"\\]|\\.)*")')
_WS = re.compile(r"\s*")


@dataclass
class Fault:
    """Something the client sent wrong: logged once; answered when `code` is set (with `msg_id`,
    which may be None)."""
    text: str
    code: int | None = None
    msg_id: Any = None


NOTHING = object()


def salvage_id(data: bytes) -> Any:
    """The top-level "id" of a JSON object that cannot be parsed (cut short, too large), or None."""
    text = data[:HEAD_BYTES].decode("utf-8", "replace")
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if depth == 1 and text[i + 1:j] == "id" and (m := _ID_VALUE.match(text, j + 1)):
                return json.loads(m.group(1))
            i = j
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        i += 1
    return None


class FrameReader:
    """Messages from a byte stream: `await next()` gives (value, fault): a parsed JSON value or
    NOTHING, and a Fault or None (both set when a frame was wrong but its message was recovered).
    (NOTHING, None) means the end of input."""

    def __init__(self, read: Callable[[], Awaitable[bytes]], max_bytes: Callable[[], int]):
        self._read = read
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._eof = False
        self._quiet = False      # junk right after a reported fault is that frame's rest: not reported again

    async def _fill(self) -> bool:
        if self._eof:
            return False
        chunk = await self._read()
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    async def _line(self) -> bytes | None:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) > MAX_HEADER_LINE:
                line = bytes(self._buf[:-OVERLAP])
                del self._buf[:-OVERLAP]
                return line
            if not await self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line or None

    def _fault(self, text: str, code: int | None = None, msg_id: Any = None) -> tuple[Any, Fault]:
        self._quiet = True
        return NOTHING, Fault(text, code, msg_id)

    async def next(self) -> tuple[Any, Fault | None]:
        length: bytes | None = None
        in_block = False
        junk = 0
        while True:
            line = await self._line()
            if line is None:
                if junk and not self._quiet:
                    return self._fault(f"{junk} bytes that are not a message before the end of input")
                return NOTHING, None
            if not line:
                if not in_block:
                    continue                    # blank lines between messages
                in_block = False
                if length is None:
                    return self._fault("a message header without Content-Length: skipped to the next one")
                if not length.isdigit():
                    return self._fault(f"Content-Length {length.decode('latin-1')!r} is not a length: "
                                       "skipped to the next message")
                return await self._body(int(length))
            m = _CONTENT_LENGTH.search(line)
            if m is not None:
                junk += m.start()
                if junk and not self._quiet and not in_block:
                    self._buf[0:0] = line[m.start():] + b"\r\n"   # report first, read the header after
                    return self._fault(f"{junk} bytes that are not a message: skipped to the next one")
                self._quiet = False
                in_block, length = True, m.group(1)
                continue
            if _OTHER_HEADER.match(line):
                in_block = True                 # Content-Type and the like: nothing we need
                continue
            in_block, length = False, None
            junk += len(line) + 2

    async def _body(self, n: int) -> tuple[Any, Fault | None]:
        limit = self.max_bytes()
        if n > limit:
            return await self._discard(n, limit)
        scanned = 0
        while len(self._buf) < n:
            # a header where the body should be: the frame's length was too long
            m = _RESYNC.search(self._buf, max(0, scanned - OVERLAP))
            if m is not None:
                body = bytes(self._buf[:m.start()])
                del self._buf[:m.start()]
                value, fault = self._decode(body)
                note = f"a message of {len(body)} bytes sent as Content-Length {n}"
                return value, Fault(note if fault is None else f"{note}: {fault.text}",
                                    fault and fault.code, fault and fault.msg_id)
            scanned = len(self._buf)
            if not await self._fill():
                return self._fault(f"the input ended {n - len(self._buf)} bytes into a message")
        body = bytes(self._buf[:n])
        del self._buf[:n]
        return self._decode(body)

    def _decode(self, body: bytes) -> tuple[Any, Fault | None]:
        try:
            return json.loads(body), None
        except UnicodeDecodeError as exc:
            return self._fault(f"parse error: the message is not UTF-8 ({exc.reason} at byte {exc.start})",
                               PARSE_ERROR, salvage_id(body))
        except RecursionError:  # nested deeper than the decoder's recursion limit
            return self._fault("parse error: the message nests too deeply", PARSE_ERROR, salvage_id(body))
        except ValueError as exc:
            error = exc
        # a message followed by more (its length too long): the message, and the rest read again
        text = body.decode("utf-8")
        start = _WS.match(text).end()
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
        except (ValueError, RecursionError):
            return self._fault(f"parse error: {error}", PARSE_ERROR, salvage_id(body))
        rest = text[end:].encode("utf-8")
        self._buf[0:0] = rest
        return value, Fault(f"a message of {len(body) - len(rest)} bytes sent as Content-Length {len(body)}")

    async def _discard(self, n: int, limit: int) -> tuple[Any, Fault]:
        """Reads a frame over the limit through, keeping only its head (for the id); stops early
        at a header inside it (its length was false)."""
        head = bytearray()
        tail = b""
        left = n
        while left > 0:
            if not self._buf and not await self._fill():
                break
            chunk = bytes(self._buf[:left])
            window = tail + chunk
            m = _RESYNC.search(window)
            if m is not None:
                cut = m.start() - len(tail)
                if cut >= 0:
                    head += chunk[:max(0, min(cut, HEAD_BYTES - len(head)))]
                    del self._buf[:cut]
                else:
                    self._buf[0:0] = tail[cut:]
                break
            if len(head) < HEAD_BYTES:
                head += chunk[:HEAD_BYTES - len(head)]
            tail = window[-OVERLAP:]
            del self._buf[:len(chunk)]
            left -= len(chunk)
        return self._fault(f"a message of {n} bytes is over the limit of {limit} bytes "
                           "(the anycode.maxMessageBytes setting): read through and dropped",
                           INVALID_REQUEST, salvage_id(bytes(head)))


def _valid_id(msg_id: Any) -> bool:
    return isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)


class SafeProtocol(LanguageServerProtocol):
    """pygls's LSP protocol behind a gate that checks each message as JSON-RPC and the LSP
    lifecycle allow it, before pygls sees it."""

    exit_code: int | None = None
    _initialize_seen = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._notification_ids: deque = deque()

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None):
        """pygls keeps the future of every handler in `_request_futures`, under the message id, and
        takes out only those of requests: a notification's (under a fresh uuid) would stay there for
        the life of the process, with its result or exception.  Here they go once done, oldest
        first, as later messages come (not from a done callback: pygls's shutdown cancels futures
        while it iterates over that map)."""
        super()._execute_handler(msg_id, handler, callback, args, kwargs)
        if callback == self._check_handler_result:
            self._notification_ids.append(msg_id)
        ids, futures = self._notification_ids, self._request_futures
        while ids:
            future = futures.get(ids[0])
            if future is not None and not future.done():
                break
            futures.pop(ids.popleft(), None)

    def fault(self, fault: Fault) -> None:
        """Logs one line; answers when the fault has a code."""
        if fault.code is not None:
            log.warning("%s: answered %d%s", fault.text, fault.code,
                        "" if fault.msg_id is None else f" to request {fault.msg_id!r}")
            if fault.msg_id is None:   # pygls would leave the id out; JSON-RPC wants it there, null
                self._send_data({"jsonrpc": "2.0", "id": None,
                                 "error": {"code": fault.code, "message": fault.text}})
            else:
                self._send_response(fault.msg_id, error=types.ResponseError(code=fault.code, message=fault.text))
        else:
            log.warning("%s", fault.text)

    def receive(self, value: Any) -> None:
        """One parsed message from the reader."""
        if not isinstance(value, dict):
            return self.fault(Fault(f"invalid request: a {type(value).__name__}, not an object",
                                    INVALID_REQUEST))
        has_id = "id" in value
        msg_id = value.get("id")
        answer_id = msg_id if _valid_id(msg_id) else None
        if value.get("jsonrpc") != "2.0":
            return self.fault(Fault('invalid request: "jsonrpc" is not "2.0"', INVALID_REQUEST, answer_id))
        if has_id and not _valid_id(msg_id) and not (msg_id is None and "error" in value):
            return self.fault(Fault(f"invalid request: the id {msg_id!r} is not a number or a string",
                                    INVALID_REQUEST))
        if "method" not in value:
            if has_id and ("result" in value or "error" in value):
                return self._structure_and_handle(value, None)      # the client's answer to us
            return self.fault(Fault("invalid request: no method", INVALID_REQUEST, answer_id))
        method = value["method"]
        if not isinstance(method, str):
            return self.fault(Fault(f"invalid request: the method {method!r} is not a string",
                                    INVALID_REQUEST, answer_id))
        params = value.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return self.fault(Fault(f"invalid request: params of {method} are not an object or an array",
                                    INVALID_REQUEST, answer_id))
        if has_id:
            self._request(value, method, msg_id)
        else:
            self._notification(value, method)

    # ------------------------------------------------------------ the lifecycle

    def _request(self, value: dict, method: str, msg_id: Any) -> None:
        if method == types.INITIALIZE:
            if self._initialize_seen:
                return self.fault(Fault("invalid request: initialize was sent twice", INVALID_REQUEST, msg_id))
            self._initialize_seen = True
        elif not self._initialize_seen:
            return self.fault(Fault(f"{method} before initialize", SERVER_NOT_INITIALIZED, msg_id))
        if self._shutdown:
            return self.fault(Fault(f"invalid request: {method} after shutdown", INVALID_REQUEST, msg_id))
        if method not in self.fm.builtin_features and method not in self.fm.features:
            log.info("unknown method %s: answered %d", method, METHOD_NOT_FOUND)
            self._send_response(msg_id, error=types.ResponseError(
                code=METHOD_NOT_FOUND, message=f"anycode has no method {method}"))
            return
        self._structure_and_handle(value, method)

    def _notification(self, value: dict, method: str) -> None:
        if method == types.EXIT:
            return self.quit(0 if self._shutdown else 1)
        if not self._initialize_seen or self._shutdown:
            log.info("%s %s: dropped", method, "before initialize" if not self._initialize_seen else "after shutdown")
            return
        if (method.startswith("$/") and method != types.CANCEL_REQUEST
                and method not in self.fm.builtin_features and method not in self.fm.features):
            return                                  # optional notifications we do not implement
        self._structure_and_handle(value, method)

    def _structure_and_handle(self, value: dict, method: str | None) -> None:
        if method is not None and "params" not in value and self.get_message_type(method) is None:
            value = {**value, "params": None}       # JSON-RPC allows no params; pygls's fallback type wants one
        try:
            message = self._converter.structure(value, self._message_type(value, method))
        except Exception as exc:  # noqa: BLE001 - cattrs' validation errors: params that do not fit
            what = f"invalid params for {method}" if method else "an answer that does not fit its request"
            detail = " ".join(str(exc).split())[:200]
            if method is not None and "id" in value:
                return self.fault(Fault(f"{what} ({detail})", INVALID_PARAMS, value["id"]))
            return self.fault(Fault(f"{what} ({detail}): dropped"))
        self.handle_message(message)

    def _message_type(self, value: dict, method: str | None) -> type:
        from pygls.protocol.json_rpc import (JsonRPCNotification, JsonRPCRequestMessage,
                                             JsonRPCResponseMessage, ResponseErrorMessage)
        if method is None:
            if "error" in value:
                return ResponseErrorMessage
            return self._result_types.pop(value["id"], None) or JsonRPCResponseMessage
        fallback = JsonRPCRequestMessage if "id" in value else JsonRPCNotification
        return self.get_message_type(method) or fallback

    def quit(self, code: int) -> None:
        """Ends the process now: a model load in a worker thread cannot be interrupted and must
        not hold the exit up (nor write to a closed stdout)."""
        self.exit_code = code
        log.info("exit (%d)", code)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


# ---------------------------------------------------------------- the loops


class _Writer:
    """pygls's writer interface over a file descriptor; a client that went away is not an error."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def close(self) -> None:
        pass


async def run(protocol: SafeProtocol, read: Callable[[], Awaitable[bytes]],
              max_bytes: Callable[[], int]) -> None:
    """Reads and dispatches messages until the end of input."""
    reader = FrameReader(read, max_bytes)
    while True:
        value, fault = await reader.next()
        if fault is not None:
            protocol.fault(fault)
        if value is NOTHING:
            if fault is None:
                return
            continue
        try:
            protocol.receive(value)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: the server keeps serving
            log.exception("error while handling a message: %r", exc)


def serve_stdio(protocol: SafeProtocol, max_bytes: Callable[[], int]) -> int:
    """Serves on stdin/stdout until `exit` or the end of input; the exit code."""
    stdin = sys.stdin.buffer
    protocol.set_writer(_Writer(sys.stdout.buffer))
    fd = stdin.fileno()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await run(protocol, lambda: loop.run_in_executor(None, os.read, fd, READ_SIZE), max_bytes)

    asyncio.run(main())
    protocol.quit(0 if protocol._shutdown else 1)
    return 1  # not reached


def serve_tcp(protocol: SafeProtocol, host: str, port: int, max_bytes: Callable[[], int]) -> int:
    """Serves one client on a TCP socket (debugging), then exits as after `exit`."""

    async def main() -> None:
        done = asyncio.Event()

        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            protocol.set_writer(_Writer(_SocketStream(writer)))
            try:
                await run(protocol, lambda: reader.read(READ_SIZE), max_bytes)
            finally:
                done.set()

        server = await asyncio.start_server(connection, host, port)
        log.info("serving on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        async with server:
            await done.wait()

    asyncio.run(main())
    protocol.quit(0 if protocol._shutdown else 1)
    return 1


class _SocketStream:
    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def flush(self) -> None:
        pass
