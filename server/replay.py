"""Record editor sessions against `anycode serve`, and play them back.

    python -m anycode.server.replay record FILE.py OUT.jsonl [--holes N] [--seed S] [--utf8]
    python -m anycode.server.replay play SESSION.jsonl... [--slack-ms MS]

`record` drives the server the way an editor does, on a real file: it opens the
file, then for a series of expression holes it deletes the expression (the code
on its right stays), asks for completions, types the expression back character
by character (sometimes asking after each keystroke without waiting, as editors
do while the user types fast), sometimes accepts a candidate by applying its
edit (and, when it was not the original expression, undoes it), and finally has
the original text back.  Every message it sends is written, one JSON object a
line, with the answers it got:

    {"kind": "meta", ...}                           file, encoding, settings, clean
    {"kind": "send", "msg": {...}, "wait": true}    a message to the server
    {"kind": "answer", "id": 7, "ms": 21.3, "result" | "error": ...}

`play` sends the same messages to a fresh server (the document edits do not
depend on the answers, so the document goes through the same states) and checks
every answer's properties (`check_answer`): well formed, in time, each candidate
parses when its edit is applied.  tests/test_replay.py runs it on
tests/sessions/*.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tree_sitter as ts

from anycode import grammars
from anycode.grammars import Language

CANCELLED_CODES = (-32800, -32802)  # RequestCancelled, ServerCancelled
DETAIL = re.compile(r"^anycode \d{1,3}\.\d%$")


# ---------------------------------------------------------------- a stdio LSP client


def read_message(out) -> dict | None:
    """The next LSP message from a server's stdout (a binary stream), or None at its end; a frame
    without a Content-Length header is skipped."""
    while True:
        length = None
        while True:
            line = out.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length is not None:
            return json.loads(out.read(length))


class LspProcess:
    """A language server subprocess spoken to over stdio with JSON-RPC framing.
    Requests from the server are answered: workspace/configuration with
    `config`, everything else with null."""

    def __init__(self, cmd: list[str], config: dict | None = None, env: dict | None = None,
                 stderr=None):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, env=env)
        self.config = config or {}
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._answers: dict[Any, tuple[dict, float]] = {}
        self.notifications: list[dict] = []
        self.received: list[float] = []     # when each notification arrived (time.monotonic())
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _write(self, msg: dict) -> None:
        body = json.dumps(msg).encode("utf-8")
        with self._lock:
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()

    def _read(self) -> None:
        while True:
            msg = read_message(self.proc.stdout)
            if msg is None:
                with self._cv:
                    self._cv.notify_all()
                return
            now = time.monotonic()
            if "method" in msg and "id" in msg:
                self._answer_server_request(msg)
            elif "method" in msg:
                with self._cv:
                    self.notifications.append(msg)
                    self.received.append(now)
                    self._cv.notify_all()
            else:
                with self._cv:
                    self._answers[msg.get("id")] = (msg, now)
                    self._cv.notify_all()

    def _answer_server_request(self, msg: dict) -> None:
        result: Any = None
        if msg["method"] == "workspace/configuration":
            result = [self.config.get(item.get("section", ""), None)
                      for item in msg["params"]["items"]]
        self._write({"jsonrpc": "2.0", "id": msg["id"], "result": result})

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, msg: dict) -> float:
        """Send a message as is; returns the time it went out."""
        t = time.monotonic()
        self._write(msg)
        return t

    def notify(self, method: str, params: Any) -> dict:
        msg = {"jsonrpc": "2.0", "method": method, "params": params}
        self.send(msg)
        return msg

    def request_msg(self, method: str, params: Any) -> dict:
        return {"jsonrpc": "2.0", "id": self.new_id(), "method": method, "params": params}

    def wait_answer(self, msg_id: Any, timeout: float = 30.0) -> tuple[dict, float]:
        end = time.monotonic() + timeout
        with self._cv:
            while msg_id not in self._answers:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no answer to request {msg_id}")
                self._cv.wait(min(left, 0.5))
            return self._answers.pop(msg_id)

    def request(self, method: str, params: Any, timeout: float = 30.0) -> dict:
        msg = self.request_msg(method, params)
        self.send(msg)
        return self.wait_answer(msg["id"], timeout)[0]

    def wait_notification(self, method: str, pred=lambda p: True, timeout: float = 30.0) -> dict:
        return self.wait_notification_at(method, pred, timeout)[0]

    def wait_notification_at(self, method: str, pred=lambda p: True, timeout: float = 30.0) -> tuple[dict, float]:
        """The first notification of `method` whose params satisfy `pred`, and when it arrived."""
        end = time.monotonic() + timeout
        seen = 0
        with self._cv:
            while True:
                for k in range(seen, len(self.notifications)):
                    n = self.notifications[k]
                    if n["method"] == method and pred(n.get("params")):
                        return n["params"], self.received[k]
                seen = len(self.notifications)
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no {method} notification")
                self._cv.wait(min(left, 0.5))

    def close(self, timeout: float = 10.0) -> int:
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=timeout)
                self.notify("exit", None)
            return self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            return self.proc.wait()
        finally:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except Exception:
                    pass


def server_command() -> list[str]:
    return [sys.executable, "-m", "anycode", "serve"]


def initialize_params(settings: dict, utf8: bool) -> dict:
    caps: dict = {
        "workspace": {"configuration": True},
        "window": {"workDoneProgress": True},
        "textDocument": {"completion": {"completionItem": {"snippetSupport": False}},
                         "inlineCompletion": {}},
    }
    if utf8:
        caps["general"] = {"positionEncodings": ["utf-8", "utf-16"]}
    return {"processId": os.getpid(), "rootUri": None, "capabilities": caps,
            "initializationOptions": settings}


# ---------------------------------------------------------------- the editor's copy


class EditorText:
    """The document as an editor holds it: a str, positions in `encoding`."""

    def __init__(self, text: str, encoding: str):
        self.text = text
        self.encoding = encoding

    def _width(self, s: str) -> int:
        if self.encoding == "utf-8":
            return len(s.encode("utf-8", "surrogatepass"))
        if self.encoding == "utf-16":
            return len(s.encode("utf-16-le", "surrogatepass")) // 2
        return len(s)

    def position(self, index: int) -> dict:
        line = self.text.count("\n", 0, index)
        start = self.text.rfind("\n", 0, index) + 1
        return {"line": line, "character": self._width(self.text[start:index])}

    def index(self, pos: dict) -> int:
        start = 0
        for _ in range(pos["line"]):
            start = self.text.index("\n", start) + 1
        end = self.text.find("\n", start)
        end = len(self.text) if end < 0 else end
        i, units = start, 0
        while i < end and units < pos["character"]:
            units += self._width(self.text[i])
            i += 1
        return i

    def range(self, start: int, end: int) -> dict:
        return {"start": self.position(start), "end": self.position(end)}

    def apply(self, change: dict) -> None:
        if "range" not in change:
            self.text = change["text"]
            return
        a, b = self.index(change["range"]["start"]), self.index(change["range"]["end"])
        self.text = self.text[:a] + change["text"] + self.text[b:]


# ---------------------------------------------------------------- checks


@dataclass
class Report:
    requests: int = 0
    answered: int = 0
    cancelled: int = 0
    items: int = 0
    empty: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lat = sorted(self.latencies_ms)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0)
        return (f"{self.requests} requests, {self.answered} answered ({self.empty} empty, "
                f"{self.items} items), {self.cancelled} cancelled, p50 {p(0.5):.1f} ms, "
                f"p95 {p(0.95):.1f} ms, {len(self.problems)} problems")


def error_nodes(node: ts.Node, lo: int, hi: int, out: list) -> list:
    """ERROR and MISSING nodes touching [lo, hi]."""
    if node.end_byte < lo or node.start_byte > hi:
        return out
    if node.type == "ERROR" or node.is_missing:
        out.append(node)
    if node.has_error:
        for c in node.children:
            error_nodes(c, lo, hi, out)
    return out


def check_answer(where: str, method: str, text: str, encoding: str, pos: dict, answer: dict,
                 ms: float, settings: dict, may_cancel: bool, hole_start: int | None, slack_ms: float,
                 parser: ts.Parser, lang: Language, report: Report) -> None:
    """Check one answer to a completion or inline completion request made at `pos`
    on document `text` (the editor's copy when the request was sent); `hole_start`:
    where the expression being typed starts, when the file around it parses."""
    problems = report.problems
    report.requests += 1
    if "error" in answer:
        if answer["error"].get("code") in CANCELLED_CODES and may_cancel:
            report.cancelled += 1
        else:
            problems.append(f"{where}: error {answer['error']}")
        return
    report.answered += 1
    report.latencies_ms.append(ms)
    budget = settings.get("timeBudgetMs", 300)
    if ms > budget + slack_ms:
        problems.append(f"{where}: answered in {ms:.0f} ms, budget {budget} + {slack_ms:.0f} ms")
    result = answer.get("result")
    if method == "textDocument/completion":
        if not isinstance(result, dict) or result.get("isIncomplete") is not True:
            problems.append(f"{where}: not a CompletionList with isIncomplete: {result!r:.200}")
            return
        items = result.get("items", [])
    else:
        if not isinstance(result, dict) or not isinstance(result.get("items"), list):
            problems.append(f"{where}: not an InlineCompletionList: {result!r:.200}")
            return
        items = result["items"]
    if len(items) > settings.get("maxItems", 5):
        problems.append(f"{where}: {len(items)} items, maxItems {settings.get('maxItems', 5)}")
    report.items += len(items)
    report.empty += not items
    doc = EditorText(text, encoding)
    cursor = doc.index(pos)
    for i, it in enumerate(items):
        w = f"{where} item {i}"
        if method == "textDocument/completion":
            edit = it.get("textEdit") or {}
            new_text, rng = edit.get("newText"), edit.get("range")
            if it.get("sortText") != f"{i:04d}":
                problems.append(f"{w}: sortText {it.get('sortText')!r}")
            if not DETAIL.match(str(it.get("detail", ""))):
                problems.append(f"{w}: detail {it.get('detail')!r}")
            if not isinstance(it.get("label"), str) or not it["label"]:
                problems.append(f"{w}: label {it.get('label')!r}")
        else:
            new_text, rng = it.get("insertText"), it.get("range")
        if not isinstance(new_text, str) or not isinstance(rng, dict):
            problems.append(f"{w}: no edit: {it!r:.200}")
            continue
        if rng["start"]["line"] != pos["line"] or rng["end"]["line"] != pos["line"]:
            problems.append(f"{w}: range {rng} not on the cursor's line {pos['line']}")
            continue
        a, b = doc.index(rng["start"]), doc.index(rng["end"])
        if not a <= cursor <= b:
            problems.append(f"{w}: range {rng} does not hold the cursor {pos}")
            continue
        typed = text[a:cursor]
        if method == "textDocument/completion":
            ft = it.get("filterText")
            if not isinstance(ft, str) or not ft.startswith(typed):
                problems.append(f"{w}: filterText {ft!r} does not start with the typed {typed!r}")
        problem = parse_problem(text, a, b, new_text, hole_start, parser, lang)
        if problem:
            problems.append(f"{w}: {new_text!r} {problem}")


def parse_problem(text: str, a: int, b: int, new_text: str, hole_start: int | None,
                  parser: ts.Parser, lang: Language) -> str | None:
    """Why `new_text` put over text[a:b] does not parse, or None.

    Every candidate must be an expression that parses on its own.  When it
    replaces the whole expression typed at a hole of a file that parsed
    (`hole_start` == a: what the recorder knows), the file must parse again,
    without an error anywhere.  (While a user is half way through typing, say
    after an opening bracket that the candidate's range does not include, the
    buffer cannot parse whatever goes in the hole.)"""
    if lang.parse_expression(new_text, parser) is None:
        return "is not an expression"
    if hole_start is None or a != hole_start:
        return None
    after = text[:a] + new_text + text[b:]
    tree = parser.parse(after.encode("utf-8", "surrogatepass"))
    if tree.root_node.has_error:
        lo = len(text[:a].encode("utf-8", "surrogatepass"))
        bad = error_nodes(tree.root_node, 0, len(after.encode("utf-8", "surrogatepass")), [])
        where = bad[0].start_point if bad else "?"
        line = after[after.rfind("\n", 0, a) + 1:].split("\n", 1)[0]
        return f"does not parse in context (error at {where}, inserted at byte {lo}): {line.strip()!r}"
    return None


# ---------------------------------------------------------------- play


def play(path: Path, slack_ms: float = 400.0, cmd: list[str] | None = None,
         stderr=None, extra_settings: dict | None = None) -> Report:
    """Play a session against a fresh server; `extra_settings` (say, a modelPath)
    go to the server on top of the session's own."""
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    meta = lines[0]
    assert meta.get("kind") == "meta", f"{path}: no meta line first"
    settings = meta.get("settings", {})
    report = Report()
    lang = grammars.get(meta.get("language") or grammars.DEFAULT)   # sessions from before the field: the default
    parser = lang.new_parser()
    server_settings = {**settings, **(extra_settings or {})}
    lsp = LspProcess(cmd or server_command(), config={"anycode": server_settings}, stderr=stderr)
    try:
        init = lsp.request("initialize", initialize_params(server_settings, meta.get("encoding") == "utf-8"))
        encoding = init["result"]["capabilities"].get("positionEncoding", "utf-16")
        if encoding != meta.get("encoding", "utf-16"):
            report.problems.append(f"server chose {encoding}, session has {meta.get('encoding')}")
            return report
        lsp.notify("initialized", {})
        lsp.wait_notification("anycode/status", lambda p: p.get("state") in ("ready", "error"), 60)
        docs: dict[str, EditorText] = {}
        pending: list[tuple] = []  # requests whose answer is still due
        n = 0
        for rec in lines[1:]:
            if rec.get("kind") != "send":
                continue
            msg = rec["msg"]
            method, params = msg["method"], msg.get("params") or {}
            if method == "textDocument/didOpen":
                td = params["textDocument"]
                docs[td["uri"]] = EditorText(td["text"], encoding)
            elif method == "textDocument/didChange":
                doc = docs[params["textDocument"]["uri"]]
                for ch in params["contentChanges"]:
                    doc.apply(ch)
            if "id" in msg:
                msg = {**msg, "id": f"replay-{lsp.new_id()}"}
            t = lsp.send(msg)
            if "id" in msg:
                n += 1
                doc = docs.get(params.get("textDocument", {}).get("uri", ""))
                hole = rec.get("hole") if meta.get("clean") else None
                pending.append((msg, t, doc.text if doc else "", rec.get("wait", True), n, hole))
                if rec.get("wait", True):  # a waited request: its answer, and all before it
                    _settle(lsp, pending, server_settings, encoding, meta, slack_ms, parser, lang, report)
                    pending = []
        _settle(lsp, pending, server_settings, encoding, meta, slack_ms, parser, lang, report)
    finally:
        lsp.close()
    return report


def _settle(lsp, entries, settings, encoding, meta, slack_ms, parser, lang, report) -> None:
    for msg, t, text, wait, n, hole in entries:
        answer, t_ans = lsp.wait_answer(msg["id"])
        if msg["method"] not in ("textDocument/completion", "textDocument/inlineCompletion"):
            continue
        where = f"request {n} ({msg['method'].split('/')[-1]} at {msg['params']['position']})"
        check_answer(where, msg["method"], text, encoding, msg["params"]["position"], answer,
                     (t_ans - t) * 1000, settings, not wait, hole, slack_ms, parser, lang, report)


# ---------------------------------------------------------------- record


def find_holes(source: bytes, parser: ts.Parser, lang: Language) -> list[tuple[int, int]]:
    """Byte ranges of single-line expressions at hole positions (as holebench picks them for Python;
    the positions it skips are Python's)."""
    tree = parser.parse(source)
    out = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.children))
        parent = node.parent
        if parent is None or node.type not in lang.EXPRESSION_TYPES | {lang.IDENTIFIER}:
            continue
        if parent.type in (lang.STATEMENT, "decorator") or node.start_point[0] != node.end_point[0]:
            continue
        i = next(k for k, c in enumerate(parent.children) if c.id == node.id)
        f = parent.field_name_for_child(i) or ""
        if (parent.type, f) in lang.HOLE_FORBIDDEN or (parent.type, "") in lang.HOLE_FORBIDDEN:
            continue
        if node.type == lang.IDENTIFIER and parent.type not in ("return_statement", "argument_list",
                                                             "assignment", "comparison_operator"):
            continue
        if parent.type in ("attribute", "call") and f in ("attribute", "function", "object"):
            continue
        if not 1 <= node.end_byte - node.start_byte <= 60:
            continue
        out.append((node.start_byte, node.end_byte))
    # one hole per expression start: the outermost
    seen, holes = set(), []
    for a, b in sorted(out, key=lambda r: (r[0], -r[1])):
        if a not in seen:
            seen.add(a)
            holes.append((a, b))
    return holes


class Recorder:
    """Plays the user: edits the document, asks for completions, takes candidates."""

    def __init__(self, lsp: LspProcess, out, encoding: str, lang: Language):
        self.lsp, self.out, self.encoding, self.lang = lsp, out, encoding, lang
        self.version = 0
        self.uri = ""
        self.doc: EditorText | None = None
        self.edits = self.requests = self.accepts = 0
        self._pending: list[tuple[Any, float]] = []
        self.hole_start: int | None = None

    def write(self, rec: dict) -> None:
        self.out.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def send(self, msg: dict, wait: bool = True) -> float:
        rec = {"kind": "send", "msg": msg}
        if "id" in msg:
            rec["wait"] = wait
            if self.hole_start is not None:
                rec["hole"] = self.hole_start  # str index where the expression being typed starts
        self.write(rec)
        return self.lsp.send(msg)

    def open(self, uri: str, text: str) -> None:
        self.uri, self.version = uri, 1
        self.doc = EditorText(text, self.encoding)
        self.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": self.lang.id, "version": 1, "text": text}}})

    def change(self, start: int, end: int, new: str) -> None:
        self.version += 1
        ch = {"range": self.doc.range(start, end), "text": new}
        self.doc.apply(ch)
        self.edits += 1
        self.send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
            "textDocument": {"uri": self.uri, "version": self.version}, "contentChanges": [ch]}})

    def ask(self, cursor: int, method: str = "textDocument/completion", wait: bool = True) -> dict | None:
        params = {"textDocument": {"uri": self.uri}, "position": self.doc.position(cursor)}
        if method == "textDocument/inlineCompletion":
            params["context"] = {"triggerKind": 2}
        else:
            params["context"] = {"triggerKind": 1}
        msg = self.lsp.request_msg(method, params)
        self.requests += 1
        self._pending.append((msg["id"], self.send(msg, wait)))
        if not wait:
            return None
        return self.collect()

    def collect(self) -> dict | None:
        last = None
        for msg_id, t in self._pending:
            answer, t_ans = self.lsp.wait_answer(msg_id)
            rec = {"kind": "answer", "id": msg_id, "ms": round((t_ans - t) * 1000, 1)}
            rec.update({k: answer[k] for k in ("result", "error") if k in answer})
            self.write(rec)
            last = answer
        self._pending = []
        return last

    @staticmethod
    def best_edit(answer: dict | None) -> tuple[dict, str] | None:
        items = ((answer or {}).get("result") or {}).get("items") or []
        if not items:
            return None
        it = items[0]
        if "textEdit" in it:
            return it["textEdit"]["range"], it["textEdit"]["newText"]
        return it["range"], it["insertText"]

    def hole(self, start: int, end: int, rnd: random.Random) -> None:
        """Delete the expression at [start, end), then type it back as a user would."""
        target = self.doc.text[start:end]
        self.hole_start = start
        try:
            self._type_hole(start, target, rnd)
        finally:
            if self._pending:
                self.collect()
            self.hole_start = None

    def _type_hole(self, start: int, target: str, rnd: random.Random) -> None:
        self.change(start, start + len(target), "")
        answer = self.ask(start, rnd.choice(["textDocument/completion", "textDocument/inlineCompletion"]))
        typed = 0
        burst = rnd.random() < 0.3
        accepted = False
        while typed < len(target):
            best = self.best_edit(answer)
            if best is not None:
                rng, new = best
                a, b = self.doc.index(rng["start"]), self.doc.index(rng["end"])
                if self.doc.text[:a] + new + self.doc.text[b:] == self.doc.text[:start] + target + self.doc.text[start + typed:]:
                    self.change(a, b, new)  # the top candidate is the expression: take it
                    self.accepts += 1
                    return
                if rnd.random() < 0.15 or (not accepted and typed >= len(target) // 2):
                    accepted = True
                    old = self.doc.text[a:b]
                    self.change(a, b, new)  # accept a wrong one, then undo it
                    self.accepts += 1
                    self.change(a, a + len(new), old)
            self.change(start + typed, start + typed, target[typed])
            typed += 1
            if typed == len(target):
                break
            if burst:
                self.ask(start + typed, wait=False)
                if typed % 8 == 0:
                    answer = self.collect()
                else:
                    answer = None
            elif target[typed - 1] in " ._(,[" or rnd.random() < 0.1:
                answer = self.ask(start + typed)
            else:
                answer = None


def record(src: Path, out_path: Path, holes: int, seed: int, utf8: bool, settings: dict,
           uri: str | None = None, cmd: list[str] | None = None, extra_settings: dict | None = None,
           non_ascii: int = 0) -> dict:
    """Record a session on `src` with `holes` holes (`non_ascii` of them on lines
    with non-ASCII text).  `extra_settings` reach the server but not the file."""
    text = src.read_text(encoding="utf-8")
    lang = grammars.for_language_id("", src.name) or grammars.get(grammars.DEFAULT)
    parser = lang.new_parser()
    source = text.encode("utf-8")
    clean = not parser.parse(source).root_node.has_error
    rnd = random.Random(seed)
    all_holes = find_holes(source, parser, lang)
    def wide(h):
        line_start = source.rfind(b"\n", 0, h[0]) + 1
        line_end = source.find(b"\n", h[1])
        return not source[line_start:line_end].isascii()
    special = [h for h in all_holes if wide(h)]
    chosen = rnd.sample(special, min(non_ascii, len(special)))
    rest = [h for h in all_holes if h not in chosen]
    chosen = sorted(chosen + rnd.sample(rest, min(holes - len(chosen), len(rest))))
    server_settings = {**settings, **(extra_settings or {})}
    lsp = LspProcess(cmd or server_command(), config={"anycode": server_settings})
    stats = {}
    try:
        init = lsp.request("initialize", initialize_params(server_settings, utf8))
        encoding = init["result"]["capabilities"].get("positionEncoding", "utf-16")
        lsp.notify("initialized", {})
        lsp.wait_notification("anycode/status", lambda p: p.get("state") in ("ready", "error"), 60)
        with open(out_path, "w", encoding="utf-8") as out:
            meta = {"kind": "meta", "source": src.name, "language": lang.id, "encoding": encoding, "settings": settings,
                    "clean": clean, "holes": len(chosen), "seed": seed,
                    "recorded_with": f"python {sys.version.split()[0]}"}
            rec = Recorder(lsp, out, encoding, lang)
            rec.write(meta)
            rec.open(uri or f"file:///work/{src.name}", text)
            # each hole ends with the original text back, so the offsets hold (bytes -> str indices)
            for a, b in chosen:
                sa = len(source[:a].decode("utf-8"))
                sb = sa + len(source[a:b].decode("utf-8"))
                rec.hole(sa, sb, rnd)
                assert rec.doc.text == text, "the session lost the original text"
            stats = {"edits": rec.edits, "requests": rec.requests, "accepts": rec.accepts}
    finally:
        lsp.close()
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anycode.server.replay", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("source", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--holes", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--utf8", action="store_true", help="offer UTF-8 positions")
    r.add_argument("--non-ascii", type=int, default=0, help="holes on lines with non-ASCII text")
    r.add_argument("--uri", default=None)
    r.add_argument("--settings", default='{"beamSize": 5, "maxItems": 5, "timeBudgetMs": 300}')
    p = sub.add_parser("play")
    p.add_argument("sessions", type=Path, nargs="+")
    p.add_argument("--slack-ms", type=float, default=400.0)
    for q in (r, p):
        q.add_argument("--server", default=None, help="server command (default: this python -m anycode serve)")
        q.add_argument("--extra-settings", default="{}", help="settings for the server only (JSON)")
    args = ap.parse_args(argv)
    cmd = args.server.split() if args.server else None
    if args.cmd == "record":
        stats = record(args.source, args.out, args.holes, args.seed, args.utf8, json.loads(args.settings),
                       uri=args.uri, cmd=cmd, extra_settings=json.loads(args.extra_settings),
                       non_ascii=args.non_ascii)
        print(f"{args.out}: {stats}")
        return 0
    bad = 0
    for path in args.sessions:
        rep = play(path, args.slack_ms, cmd=cmd, extra_settings=json.loads(args.extra_settings))
        print(f"{path}: {rep.summary()}")
        for prob in rep.problems[:20]:
            print("  " + prob)
        bad += bool(rep.problems)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
