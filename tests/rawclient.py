"""A raw JSON-RPC client over a real `anycode serve` process's stdio: it sends any
bytes (broken frames included, which pytest-lsp cannot), reads the server's frames
on a thread and waits for answers with a timeout, so a test fails rather than hangs."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from typing import Any

from conftest import SERVER_CMD


def frame(body: Any, *, length: int | None = None, name: bytes = b"Content-Length") -> bytes:
    """One message: `body` (an object, or raw bytes) after its header; `length` overrides
    the true length (a broken frame)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    n = len(data) if length is None else length
    return name + b": " + str(n).encode() + b"\r\n\r\n" + data


def request(msg_id: Any, method: str, params: Any = None) -> dict:
    msg = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: Any = None) -> dict:
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


INITIALIZE_PARAMS = {"processId": None, "rootUri": None, "capabilities": {}}


class RawServer:
    """`anycode serve` with pipes; `messages` collects every frame it sends."""

    def __init__(self, *args: str, env: dict | None = None):
        self.proc = subprocess.Popen([*SERVER_CMD, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.inbox: queue.Queue = queue.Queue()
        self.messages: list[dict] = []
        self.stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        f = self.proc.stdout
        while True:
            length = None
            while True:
                line = f.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            msg = json.loads(f.read(length))
            self.messages.append(msg)
            self.inbox.put(msg)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr += line

    def send(self, data: bytes | dict) -> None:
        self.proc.stdin.write(data if isinstance(data, bytes) else frame(data))
        self.proc.stdin.flush()

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        """The first message (seen before or arriving within `timeout`) for which pred is true."""
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for msg in self.messages[seen:]:
                if pred(msg):
                    return msg
            seen = len(self.messages)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching message in {timeout} s; got {self.messages[-5:]}")
            try:
                if self.inbox.get(timeout=min(left, 0.5)) is None and self.proc.poll() is not None:
                    for msg in self.messages[seen:]:
                        if pred(msg):
                            return msg
                    raise EOFError(f"the server exited ({self.proc.returncode}): {self.stderr[-2000:]!r}")
            except queue.Empty:
                pass

    def answer(self, msg_id: Any, timeout: float = 30.0) -> dict:
        """The response to request `msg_id`."""
        return self.wait_for(lambda m: m.get("id") == msg_id and "method" not in m, timeout)

    def call(self, msg_id: Any, method: str, params: Any = None, timeout: float = 30.0) -> dict:
        self.send(request(msg_id, method, params))
        return self.answer(msg_id, timeout)

    def initialize(self, params: dict | None = None) -> dict:
        result = self.call(0, "initialize", params or INITIALIZE_PARAMS)
        self.send(notification("initialized", {}))
        return result

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            time.sleep(0.1)  # let the stderr thread drain

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self) -> "RawServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
