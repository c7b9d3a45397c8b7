"""A seeded, bounded soak and fuzz of `anycode serve` through a raw stdio client (a benchmark and a
robustness check, not a unit test).

    python -m anycode.server.soak [--requests 10000] [--fuzz 300] [--big-mb 10] [--big-requests 60]
                                  [--seed 0] [--out docs/bench.md] [--json OUT]

Three phases against one fresh server process, each bounded in count and in time per answer:
  * soak: a small document typed into and completed `--requests` times (typing along, random
    cursors, cancellations, other documents opened and closed); the server's resident set every
    1,000 requests, with the counts anycode/stats gives for what it holds per request;
  * fuzz: `--fuzz` hostile messages (broken frames, bodies that are not JSON-RPC, wrong params,
    positions outside the document, multi-byte edits), each followed by a request that must be
    answered;
  * big file: a generated module of `--big-mb` MB opened, `--big-requests` completions inside one
    of its functions timed from request to answer, the answers compared with those in a small
    file holding that function alone, and the resident set before opening and after closing it.
Exit status 1 when the server died, an answer was missing or the big file's answers differed.
"""
from __future__ import annotations

import argparse
import json
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from anycode.server.bench import rss_mb
from anycode.server.replay import read_message

STATS = "anycode/stats"
SAME_BUDGET_MS = 30000
ANSWERED_ERRORS = (-32800, -32801, -32602)   # cancelled, changed, a position outside what LSP allows
ANSWER_TIMEOUT = 60.0


class RawClient:
    """`anycode serve` on pipes: sends any bytes, keeps only what is still awaited (the answers
    not yet taken), so that the client's own memory stays flat over a long run."""

    def __init__(self, args: list[str], config: dict | None = None, command: list[str] | None = None):
        self.stderr = tempfile.TemporaryFile()
        command = command or [sys.executable, "-m", "anycode", "serve"]
        self.proc = subprocess.Popen([*command, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.config = config or {}
        self.answers: dict[Any, tuple[dict, float]] = {}
        self.cv = threading.Condition()
        self.lock = threading.Lock()
        self.notifications = 0
        self.last_status: dict = {}
        self.next_id = 0
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            msg = read_message(self.proc.stdout)
            if msg is None:
                with self.cv:
                    self.closed = True
                    self.cv.notify_all()
                return
            self._dispatch(msg, time.monotonic())

    def _dispatch(self, msg: dict, now: float) -> None:
        if "method" in msg and "id" in msg:   # the server asks: configuration, progress tokens
            items = (msg.get("params") or {}).get("items") or []
            result = [self.config for _ in items] if msg["method"] == "workspace/configuration" else None
            self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result})
        elif "method" in msg:
            self.notifications += 1
            if msg["method"] == "anycode/status":
                self.last_status = msg.get("params") or {}
        else:
            with self.cv:
                self.answers[msg.get("id")] = (msg, now)
                self.cv.notify_all()

    def send(self, msg: dict | bytes) -> None:
        data = msg if isinstance(msg, bytes) else frame(msg)
        with self.lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any = None) -> int:
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return self.next_id

    def wait(self, msg_id: Any, timeout: float = ANSWER_TIMEOUT) -> tuple[dict, float]:
        """(the answer to `msg_id`, when it arrived); raises TimeoutError or EOFError."""
        end = time.monotonic() + timeout
        with self.cv:
            while msg_id not in self.answers:
                if self.closed:
                    raise EOFError(f"the server exited ({self.proc.poll()}): {self.stderr_tail()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to request {msg_id} in {timeout} s")
                self.cv.wait(left)
            return self.answers.pop(msg_id)

    def call(self, method: str, params: Any = None, timeout: float = ANSWER_TIMEOUT) -> dict:
        return self.wait(self.request(method, params), timeout)[0]

    def timed(self, method: str, params: Any) -> tuple[dict, float]:
        """An answer and its latency in ms, from the request written to the answer read."""
        t0 = time.monotonic()
        msg, t1 = self.wait(self.request(method, params))
        return msg, (t1 - t0) * 1000

    def stats(self) -> dict:
        return self.call(STATS, {}).get("result") or {}

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stderr_tail(self, n: int = 2000) -> str:
        self.stderr.seek(0, 2)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - n))
        return self.stderr.read().decode("utf-8", "replace")

    def close(self) -> int | None:
        try:
            self.call("shutdown", None, timeout=10)
            self.notify("exit", None)
            return self.proc.wait(10)
        except (OSError, TimeoutError, EOFError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(10)
            return None


def frame(msg: Any) -> bytes:
    body = json.dumps(msg).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def start(args: argparse.Namespace, command: list[str] | None = None, beam: int | None = None,
          budget_ms: int | None = None) -> RawClient:
    """A fresh server, initialized (UTF-16 positions, the client's usual), its model loaded."""
    flags = ["--beam-size", str(beam or args.beam), "--time-budget-ms", str(budget_ms or args.budget_ms)]
    if args.model:
        flags += ["--model-path", args.model]
    client = RawClient(flags, command=command)
    try:
        client.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}}, timeout=120)
        client.notify("initialized", {})
        end = time.monotonic() + 120
        while client.stats().get("state") == "loading":
            if time.monotonic() > end:
                raise TimeoutError("the model did not load in 120 s")
            time.sleep(0.2)
    except BaseException:
        client.proc.kill()
        client.proc.wait(10)
        raise
    return client


# ---------------------------------------------------------------- documents

NAMES = ["items", "value", "total", "result", "count", "name", "path", "data", "index", "limit",
         "self.cache", "self.items", "config", "node", "key", "line", "text", "size", "parts"]


def function_text(rng: random.Random, k: int) -> str:
    """A short generated function, different for every seed and `k`."""
    a, b, c, d = rng.sample(NAMES[:10], 4)
    lines = [f"def step_{k}({a}, {b}=None):",
             f"    \"\"\"Function {k}.\"\"\"",
             f"    {c} = []",
             f"    for {d} in {a}:",
             f"        if {d} is not None and {b}:",
             f"            {c}.append({d} * {rng.randint(1, 9)})",
             f"    {rng.choice(NAMES)} = len({c}) + {rng.randint(0, 99)}",
             f"    return sorted({c}, key=lambda x: x)",
             "", ""]
    return "\n".join(lines)


def module_text(rng: random.Random, n: int, first: int = 0) -> str:
    return "import os\nimport sys\n\n\n" + "".join(function_text(rng, first + k) for k in range(n))


def uri_of(name: str) -> str:
    return f"file:///anycode-soak/{name}.py"


def open_doc(client: RawClient, uri: str, text: str, version: int = 1) -> None:
    client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": version, "text": text}})


def change(client: RawClient, uri: str, version: int, line: int, col: int, end_col: int, text: str) -> None:
    client.notify("textDocument/didChange", {
        "textDocument": {"uri": uri, "version": version},
        "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                      "end": {"line": line, "character": end_col}}, "text": text}]})


def position(uri: str, line: int, col: int) -> dict:
    return {"textDocument": {"uri": uri}, "position": {"line": line, "character": col}}


# ---------------------------------------------------------------- soak

TYPED = ["len(items)", "sorted(data, key=len)", "self.cache.get(key)", "os.path.join(path, name)",
         "result + count * 2", "'naïve ✓ 𝔘'.upper()", "[x for x in parts if x]", "value is None"]


def units(text: str) -> int:
    """Length in UTF-16 code units, the client's default position unit."""
    return len(text.encode("utf-16-le")) // 2


class Typist:
    """Types expressions into a document one character a request, on a line of its own inserted in
    some function, then takes the line out again: the document stays small however long it runs."""

    def __init__(self, client: RawClient, rng: random.Random, uri: str, text: str):
        self.client, self.rng, self.uri = client, rng, uri
        self.lines = text.split("\n")
        self.version = 1
        self.line: int | None = None
        self.typed = ""
        self.target = ""
        open_doc(client, uri, text)

    def _edit(self, line: int, col: int, end_line: int, end_col: int, text: str) -> None:
        self.version += 1
        self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": self.uri, "version": self.version},
            "contentChanges": [{"range": {"start": {"line": line, "character": col},
                                          "end": {"line": end_line, "character": end_col}}, "text": text}]})

    def step(self) -> tuple[int, int]:
        """One keystroke (a new line first, or the line taken out when done); the cursor."""
        if self.line is None:
            bodies = [i for i, s in enumerate(self.lines) if s.startswith("    ") and s.strip()]
            at = self.rng.choice(bodies)
            head = "    probe = "
            self._edit(at, units(self.lines[at]), at, units(self.lines[at]), "\n" + head)
            self.lines.insert(at + 1, head)
            self.line, self.typed, self.target = at + 1, "", self.rng.choice(TYPED)
        line = self.line
        if len(self.typed) >= len(self.target):
            self._edit(line - 1, units(self.lines[line - 1]), line, units(self.lines[line]), "")
            del self.lines[line]
            self.line = None
            return self.step()
        ch = self.target[len(self.typed)]
        col = units(self.lines[line])
        self._edit(line, col, line, col, ch)
        self.lines[line] += ch
        self.typed += ch
        return line, units(self.lines[line])


def soak(client: RawClient, args: argparse.Namespace) -> dict:
    """`args.requests` sequential requests on a small document; RSS every 1,000."""
    rng = random.Random(args.seed)
    uri = uri_of("soak")
    typist = Typist(client, rng, uri, module_text(rng, 12))
    rss: dict[int, float] = {0: client.rss()}
    held: dict[int, dict] = {}
    latencies: list[float] = []
    t_start = time.monotonic()
    for i in range(1, args.requests + 1):
        line, col = typist.step()
        method = "textDocument/completion" if i % 2 else "textDocument/inlineCompletion"
        params = position(uri, line, col)
        if method.endswith("inlineCompletion"):
            params["context"] = {"triggerKind": 2}
        if i % 97 == 0:      # somewhere else, maybe outside the document
            params["position"] = {"line": rng.randint(-2, len(typist.lines) + 3),
                                  "character": rng.randint(-2, 120)}
        if i % 251 == 0:     # another document opened, completed in and closed
            scratch(client, rng, i)
        msg_id = client.request(method, params)
        if i % 50 == 0:
            client.notify("$/cancelRequest", {"id": msg_id})
        msg, t1 = client.wait(msg_id)
        if "result" not in msg and msg.get("error", {}).get("code") not in ANSWERED_ERRORS:
            raise RuntimeError(f"request {i}: {msg}")
        if i % 1000 == 0:
            st = client.stats()
            rss[i] = client.rss()
            held[i] = {k: st.get(k) for k in ("jobs", "pinned", "futures", "documents", "leafCache")}
            held[i]["documents"] = len(held[i]["documents"] or [])
            held[i]["leafCache"] = (held[i]["leafCache"] or {}).get("entries")
            print(f"  request {i}: RSS {rss[i]:.1f} MB, held {held[i]}, "
                  f"{time.monotonic() - t_start:.0f} s", flush=True)
    st = client.stats()
    return {"rss_mb": rss, "held": held, "seconds": time.monotonic() - t_start,
            "p50_ms": st.get("p50Ms"), "p95_ms": st.get("p95Ms"), "model_runs": st.get("modelRuns"),
            "cache_hits": st.get("cacheHits"), "requests": args.requests}


def scratch(client: RawClient, rng: random.Random, i: int) -> None:
    uri = uri_of(f"scratch{i}")
    text = module_text(rng, 3, first=1000 + i)
    open_doc(client, uri, text)
    lines = text.split("\n")
    line = rng.randrange(len(lines))
    client.wait(client.request("textDocument/completion", position(uri, line, units(lines[line]))))
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


# ---------------------------------------------------------------- fuzz

def _fuzz_frames(rng: random.Random) -> list[bytes]:
    body = json.dumps({"jsonrpc": "2.0", "id": "f", "method": STATS, "params": {}}).encode()
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    deep = b"[" * 100000 + b"]" * 100000
    return [
        b"Content-Length: %d\r\n\r\n" % (len(body) + rng.randint(-12, 12)) + body,
        b"Content-Length: abc\r\n\r\n" + body,
        b"content-length: %d\r\n\r\n" % len(body) + body,
        b"Content-Type: application/vscode-jsonrpc\r\n\r\n" + body,
        b"Content-Length: 1000000000000000\r\n\r\n" + body,
        junk, junk + b"\r\n",
        b"Content-Length: %d\r\n\r\n" % len(junk) + junk,
        b"Content-Length: %d\r\n\r\n" % len(deep) + deep,
    ]


def _fuzz_messages(rng: random.Random, uri: str) -> list[Any]:
    weird = [None, -1, 2 ** 70, 1.5, "3", [], {}, True]
    text = "".join(rng.choice("aé✓𝔘\ud800\n\r\t ({[\"'#") for _ in range(rng.randint(0, 20)))
    pos = {"line": rng.choice(weird + [0, 3, 10 ** 6]), "character": rng.choice(weird + [0, 5])}
    rng_ = {"start": pos, "end": {"line": rng.randint(-1, 50), "character": rng.randint(-1, 200)}}
    return [
        {"jsonrpc": "2.0", "id": rng.randint(1, 10 ** 9) + 10 ** 9, "method": "textDocument/completion",
         "params": {"textDocument": {"uri": rng.choice([uri, "file:///nope.py", 3])}, "position": pos}},
        {"jsonrpc": "2.0", "method": "textDocument/didChange",
         "params": {"textDocument": {"uri": uri, "version": rng.randint(-5, 10 ** 6)},
                    "contentChanges": [{"range": rng_, "text": text}]}},
        {"jsonrpc": "2.0", "method": "textDocument/didChange",
         "params": {"textDocument": {"uri": uri}, "contentChanges": rng.choice(weird)}},
        {"jsonrpc": "2.0", "id": {"an": "object"}, "method": STATS},
        {"jsonrpc": "1.0", "id": 5, "method": STATS},
        {"jsonrpc": "2.0", "id": rng.randint(1, 9) + 10 ** 9, "method": rng.choice(["x/y", "", "$/z"]),
         "params": rng.choice(weird)},
        {"jsonrpc": "2.0", "method": "textDocument/didClose", "params": {"textDocument": {"uri": "file:///x"}}},
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri_of("fuzzopen"), "languageId": "python", "version": 1, "text": rng.choice(weird)}}},
        [1, 2, 3], "a string", None,
    ]


def fuzz(client: RawClient, args: argparse.Namespace) -> dict:
    """`args.fuzz` hostile messages, each followed by a request that must be answered."""
    rng = random.Random(args.seed + 1)
    uri = uri_of("fuzz")
    open_doc(client, uri, module_text(rng, 3))
    kinds: dict[str, int] = {}
    t0 = time.monotonic()
    for i in range(args.fuzz):
        if rng.random() < 0.4:
            cases = _fuzz_frames(rng)
            k = rng.randrange(len(cases))
            client.send(cases[k])
            name = f"frame{k}"
        else:
            cases = _fuzz_messages(rng, uri)
            k = rng.randrange(len(cases))
            client.send(frame(cases[k]))
            name = f"message{k}"
        kinds[name] = kinds.get(name, 0) + 1
        st = client.call(STATS, {}, timeout=15)
        if "result" not in st:
            raise RuntimeError(f"fuzz case {i} ({name}): the next request got {st}")
        if i % 10 == 0:   # completion still works on whatever the edits made of the document
            msg = client.call("textDocument/completion", position(uri, rng.randint(0, 12), rng.randint(0, 20)))
            if "result" not in msg and msg.get("error", {}).get("code") not in ANSWERED_ERRORS:
                raise RuntimeError(f"fuzz case {i}: completion got {msg}")
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return {"cases": args.fuzz, "kinds": len(kinds), "seconds": time.monotonic() - t0,
            "alive": client.proc.poll() is None}


# ---------------------------------------------------------------- big file

MARKS = ("= ", "sorted(", "len(", "append(", " in ")


def holed_functions(rng: random.Random, n: int) -> list[tuple[str, tuple[int, int]]]:
    """`n` generated functions, each cut short after an expression's start (where one is typed, as
    in the dataset's holes), with the cursor there: (text, (line, character))."""
    out = []
    while len(out) < n:
        lines = function_text(rng, 10 ** 6 + len(out)).split("\n")
        places = [(i, line.find(m) + len(m)) for i, line in enumerate(lines[2:], 2) for m in MARKS
                  if line.find(m) > 0]
        i, col = rng.choice(places)
        out.append(("\n".join(lines[:i] + [lines[i][:col]]) + "\n\n\n", (i, units(lines[i][:col]))))
    return out


def big_module(rng: random.Random, megabytes: float, targets: list[str]) -> tuple[str, list[int]]:
    """A generated module of about `megabytes` MB with `targets` spread through it; (text, the line
    each target starts on)."""
    chunk = int(megabytes * 1e6) // (len(targets) + 1)
    parts, starts, line, k = ["import os\nimport sys\n\n\n"], [], 4, 0
    for target in targets + [None]:
        size = 0
        while size < chunk:
            parts.append(function_text(rng, k))
            size += len(parts[-1])
            line += parts[-1].count("\n")
            k += 1
        if target is not None:
            starts.append(line)
            parts.append(target)
            line += target.count("\n")
    return "".join(parts), starts


def labels(msg: dict) -> list[str]:
    result = msg.get("result") or {}
    return [item["label"] for item in result.get("items", [])]


def _alone(client: RawClient, targets: list[tuple[str, tuple[int, int]]],
           latencies: list[float] | None = None) -> list[list[str]]:
    """The answers at each target's cursor in a small file holding that function alone."""
    out = []
    for k, (text, (line, col)) in enumerate(targets):
        uri = uri_of(f"alone{k}")
        open_doc(client, uri, text)
        msg, ms = client.timed("textDocument/completion", position(uri, line, col))
        out.append(labels(msg))
        if latencies is not None:
            latencies.append(ms)
        client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    return out


def budget(client: RawClient, ms: int) -> None:
    """The server's time budget set through didChangeConfiguration (the model stays loaded)."""
    client.notify("workspace/didChangeConfiguration", {"settings": {"anycode": {"timeBudgetMs": ms}}})
    end = time.monotonic() + 10
    while client.stats().get("settings", {}).get("timeBudgetMs") != ms:
        if time.monotonic() > end:
            raise RuntimeError(f"the time budget did not change to {ms} ms")
        time.sleep(0.05)


def big_file(client: RawClient, args: argparse.Namespace) -> dict:
    """Completions in a generated module of `args.big_mb` MB against the same functions alone."""
    rng = random.Random(args.seed + 2)
    targets = holed_functions(rng, 6)
    # the answers compared at a budget no search reaches (at the bench's, a busy machine cuts them
    # short at different steps); the latencies at the bench's
    budget(client, SAME_BUDGET_MS)
    alone = _alone(client, targets)
    budget(client, args.budget_ms)
    alone_ms: list[float] = []
    for _ in range(max(1, args.big_requests // len(targets))):   # as many timed as in the big file
        _alone(client, targets, alone_ms)
    text, starts = big_module(rng, args.big_mb, [t for t, _ in targets])
    cursors = [(at + line, col) for at, (_, (line, col)) in zip(starts, targets)]
    size = len(text.encode("utf-8"))
    far = [i for i, s in enumerate(text.split("\n")) if s.startswith('    """Function')
           and min(abs(i - at) for at in starts) > 100]
    client.stats()
    time.sleep(1.0)
    rss_before = client.rss()
    big = uri_of("big")
    t0 = time.monotonic()
    open_doc(client, big, text)
    del text
    first, first_ms = client.timed("textDocument/completion", position(big, *cursors[0]))
    open_ms = (time.monotonic() - t0) * 1000
    rss_open = client.rss()
    budget(client, SAME_BUDGET_MS)
    in_big = [labels(client.call("textDocument/completion", position(big, *c), timeout=120)) for c in cursors]
    same = [x == a for x, a in zip(in_big, alone)]
    budget(client, args.budget_ms)
    latencies, answered = [], 0
    for i in range(args.big_requests):
        # an edit far from the functions (a new version: nothing cached), then a completion in one
        change(client, big, i + 2, rng.choice(far), 7, 7 if i % 2 == 0 else 8, "x" if i % 2 == 0 else "")
        msg, ms = client.timed("textDocument/completion", position(big, *cursors[i % len(cursors)]))
        latencies.append(ms)
        answered += bool(labels(msg))
    client.notify("textDocument/didClose", {"textDocument": {"uri": big}})
    client.stats()
    time.sleep(1.0)
    q = sorted(latencies)
    return {"bytes": size, "holes": len(targets), "same_as_alone": sum(same),
            "differing": [(a, x) for a, x, ok in zip(alone, in_big, same) if not ok],
            "alone_with_items": sum(bool(a) for a in alone), "with_items": answered,
            "requests": len(latencies), "open_and_first_ms": open_ms, "first_ms": first_ms,
            "first_items": len(labels(first)),
            "p50_ms": statistics.median(q), "p95_ms": q[min(len(q) - 1, int(0.95 * len(q)))],
            "max_ms": q[-1], "alone_p50_ms": statistics.median(alone_ms),
            "alone_p95_ms": sorted(alone_ms)[min(len(alone_ms) - 1, int(0.95 * len(alone_ms)))],
            "rss_before_mb": rss_before, "rss_open_mb": rss_open,
            "rss_after_mb": client.rss()}


# ---------------------------------------------------------------- report

def report(args: argparse.Namespace, res: dict) -> list[str]:
    out = [f"anycode serve over stdio (raw client), seed {args.seed}; soak and fuzz at beam {args.soak_beam}, "
           f"budget {args.soak_budget_ms} ms; big file at beam {args.beam}, budget {args.budget_ms} ms; "
           f"load average (1, 5, 15 min) before: {res['load']}, after: {res.get('load_after')}"]
    s = res.get("soak")
    if s:
        r = s["rss_mb"]
        first = r.get(1000, float("nan"))
        last = r.get(max(r))
        out += [f"  soak: {s['requests']} requests in {s['seconds']:.0f} s ({s['model_runs']} model runs, "
                f"{s['cache_hits']} typing-along hits), p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms per model run",
                f"  RSS: {r[0]:.1f} MB at start, {first:.1f} MB at request 1000, {last:.1f} MB at request "
                f"{max(r)}: growth 1000->{max(r)} {last - first:+.1f} MB (target < 10 MB)",
                "  RSS every 1000: " + ", ".join(f"{v:.1f}" for k, v in sorted(r.items()) if k),
                f"  held at the end: {s['held'].get(max(s['held'])) if s['held'] else {}}"]
    f = res.get("fuzz")
    if f:
        out.append(f"  fuzz: {f['cases']} hostile messages of {f['kinds']} kinds in {f['seconds']:.0f} s, "
                   f"every one followed by an answered request; server alive: {f['alive']}")
    b = res.get("big")
    if b:
        out += [f"  big file: {b['bytes'] / 1e6:.1f} MB, open + first completion {b['open_and_first_ms']:.0f} ms "
                f"({b['first_items']} items); {b['same_as_alone']}/{b['holes']} holes answered as in the "
                f"function alone ({b['alone_with_items']} of them with items; compared at a "
                f"{SAME_BUDGET_MS} ms budget)",
                f"  big file: {b['requests']} completions after an edit each: p50 {b['p50_ms']:.0f} ms, "
                f"p95 {b['p95_ms']:.0f} ms, max {b['max_ms']:.0f} ms (budget {args.budget_ms} ms); "
                f"{b['with_items']} with items; the same functions alone: p50 {b['alone_p50_ms']:.0f} ms, "
                f"p95 {b['alone_p95_ms']:.0f} ms",
                f"  big file RSS: {b['rss_before_mb']:.1f} MB before opening, {b['rss_open_mb']:.1f} MB open, "
                f"{b['rss_after_mb']:.1f} MB after closing ({b['rss_after_mb'] - b['rss_before_mb']:+.1f} MB; "
                f"target within 20 MB)"]
    return out


def phase(args: argparse.Namespace, res: dict, beam: int, budget_ms: int, steps: list) -> bool:
    """The `steps` ((name, function) pairs) on one fresh server; False when one failed."""
    client = start(args, beam=beam, budget_ms=budget_ms)
    try:
        for name, step in steps:
            res[name] = step(client, args)
        return True
    except (RuntimeError, TimeoutError, EOFError) as exc:
        print(f"soak failed: {exc}\n{client.stderr_tail()}", file=sys.stderr)
        return False
    finally:
        res.setdefault("exit_codes", []).append(client.close())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anycode.server.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--fuzz", type=int, default=300)
    ap.add_argument("--big-mb", type=float, default=10.0)
    ap.add_argument("--big-requests", type=int, default=60)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--budget-ms", type=int, default=300)
    ap.add_argument("--soak-beam", type=int, default=0, help="beam of the soak and fuzz server (default --beam)")
    ap.add_argument("--soak-budget-ms", type=int, default=0,
                    help="time budget of the soak and fuzz server (default --budget-ms)")
    ap.add_argument("--model", default="", help="model directory (default: the shipped model)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="")
    ap.add_argument("--out", type=Path, default=None, help="markdown file whose bench-soak section to rewrite")
    args = ap.parse_args(argv)
    args.soak_beam, args.soak_budget_ms = args.soak_beam or args.beam, args.soak_budget_ms or args.budget_ms
    import os
    res: dict[str, Any] = {"load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    steps = [(n, f) for n, f, k in (("soak", soak, args.requests), ("fuzz", fuzz, args.fuzz)) if k]
    ran = not steps or phase(args, res, args.soak_beam, args.soak_budget_ms, steps)
    if args.big_mb > 0:
        ran = phase(args, res, args.beam, args.budget_ms, [("big", big_file)]) and ran
    ok = ran and ("big" not in res or res["big"]["same_as_alone"] == res["big"]["holes"])
    res["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = report(args, res)
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.out and ran:
        from anycode.model.bench import write_report
        command = "python -m anycode.server.soak " + " ".join(argv if argv is not None else sys.argv[1:])
        write_report(args.out, f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `{command}`:\n\n```\n"
                     + "\n".join(lines) + "\n```", "bench-soak")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
