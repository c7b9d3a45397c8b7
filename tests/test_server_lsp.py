"""`anycode serve` end to end: a real server process over stdio, pytest-lsp's
client, the real completer: the shipped model, or without it a small untrained
one (conftest.model_settings)."""
from __future__ import annotations

import argparse
import asyncio
import json.encoder
import re
import textwrap
import time
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled

from anycode.grammars import python as grammar
from anycode.server.replay import error_nodes, find_holes
from conftest import Doc, index_of, start_server, stats, stop_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

SETTINGS = {"beamSize": 5, "maxItems": 5, "timeBudgetMs": 2000}
REAL_FILES = [Path(m.__file__) for m in (textwrap, json.encoder, argparse)]
DETAIL = re.compile(r"^anycode \d{1,3}\.\d%$")
PARSER = grammar.new_parser()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(model_settings):
    c = await start_server({**SETTINGS, **model_settings})
    yield c
    await stop_server(c)


@pytest.fixture(scope="module")
def trained(model_settings) -> bool:
    """False for the untrained stand-in model, whose beams may end with nothing finished."""
    return "modelPath" not in model_settings


_n = 0


def new_doc(client, text: str) -> Doc:
    global _n
    _n += 1
    return Doc(client, f"file:///work/test_{_n}.py", text)


def cut_returns(text: str, picks: list[int]) -> tuple[str, list[int]]:
    """Remove the values of the picked `return X` statements: (text, hole offsets)."""
    spans = [m.span(1) for m in re.finditer(r"\breturn ([^\n#]+)\n", text)]
    chosen = sorted(spans[i] for i in picks)
    cursors = []
    for a, b in reversed(chosen):
        text = text[:a] + text[b:]
    shift = 0
    for a, b in chosen:
        cursors.append(a - shift)
        shift += b - a
    return text, [cursors[chosen.index(spans[i])] for i in picks]


async def raw_request(client, method: str, params: dict):
    """Send params as they are, past the client's own type checks."""
    from concurrent.futures import Future
    msg_id = f"raw-{time.monotonic_ns()}"
    fut: Future = Future()
    client.protocol._request_futures[msg_id] = fut
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return await asyncio.wrap_future(fut)


def parses_in_context(text: str, start: int, new_text: str, end: int) -> bool:
    after = (text[:start] + new_text + text[end:]).encode()
    lo = len(text[:start].encode())
    return not error_nodes(PARSER.parse(after).root_node, lo, lo + len(new_text.encode()), [])


def check_completion(doc: Doc, cursor: int, result: types.CompletionList, max_items: int = 5):
    """The properties every completion answer has; returns the candidate texts."""
    assert result.is_incomplete is True
    assert len(result.items) <= max_items
    texts = []
    for i, it in enumerate(result.items):
        assert it.sort_text == f"{i:04d}"
        assert DETAIL.match(it.detail), it.detail
        assert it.kind in (types.CompletionItemKind.Snippet, types.CompletionItemKind.Text)
        edit = it.text_edit
        assert isinstance(edit, types.TextEdit)
        a = index_of(doc.text, edit.range.start)
        b = index_of(doc.text, edit.range.end)
        assert edit.range.start.line == edit.range.end.line == doc.pos(cursor).line
        assert a <= cursor <= b
        typed = doc.text[a:cursor]
        assert it.filter_text.startswith(typed)
        assert parses_in_context(doc.text, a, edit.new_text, b), (edit.new_text, doc.text[a - 40:b + 40])
        texts.append(edit.new_text)
    return texts


def check_replaces(doc: Doc, result: types.CompletionList, start: int, end: int) -> None:
    """Every item's edit replaces exactly doc.text[start:end], and the buffer with it parses."""
    for it in result.items:
        edit = it.text_edit
        assert (index_of(doc.text, edit.range.start), index_of(doc.text, edit.range.end)) == (start, end)
        after = doc.text[:start] + edit.new_text + doc.text[end:]
        assert not PARSER.parse(after.encode()).root_node.has_error, (edit.new_text, after)


def check_inline(doc: Doc, cursor: int, result: types.InlineCompletionList, max_items: int = 5):
    assert len(result.items) <= max_items
    for it in result.items:
        a = index_of(doc.text, it.range.start)
        b = index_of(doc.text, it.range.end)
        assert a <= cursor <= b and it.range.start.line == it.range.end.line
        assert parses_in_context(doc.text, a, it.insert_text, b)
    return [it.insert_text for it in result.items]


async def test_capabilities(client):
    caps = client.init_result.capabilities
    assert caps.position_encoding == "utf-16"  # VS Code 1.65's capabilities offer no other
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.completion_provider is not None and caps.inline_completion_provider is not None
    result = await stats(client)
    assert result.encoding == "utf-16"
    assert result.settings.timeBudgetMs == 2000


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
async def test_holes_in_real_files(client, trained, path):
    """Cut expressions out of real files; every hole gets well-formed candidates
    that parse in place, from completion and from inline completion."""
    text = path.read_text(encoding="utf-8")
    source = text.encode()
    holes = find_holes(source, PARSER, grammar.PYTHON)
    step = max(1, len(holes) // 6)
    answered = 0
    for a, b in holes[::step][:6]:
        sa = len(source[:a].decode())
        sb = sa + len(source[a:b].decode())
        doc = new_doc(client, text[:sa] + text[sb:])
        texts = check_completion(doc, sa, await doc.complete(sa))
        inline = check_inline(doc, sa, await doc.inline(sa))
        if texts:  # the same ranking (from the cache); an empty answer is not cached
            assert inline == texts[:len(inline)]
        answered += bool(texts)
    assert answered >= (5 if trained else 2)


HOLES = """\
def area(shape, scale):
    width = shape.width * scale
    height = shape.height * scale
    if width > 0 and <A>:
        total = compute(width, <B>)
    result = <C>
    limit = len(shape.points) > <D>
    return <E>
"""


async def test_issue_holes(client, trained):
    """The holes the issue names: `if a and |:`, `f(a, |)`, `x = |`, `value.length() > |`, `return |`."""
    answered = 0
    for mark in "ABCDE":
        text = HOLES
        for other in "ABCDE":
            if other != mark:
                text = text.replace(f"<{other}>", "width")
        cursor = text.index(f"<{mark}>")
        text = text.replace(f"<{mark}>", "")
        doc = new_doc(client, text)
        texts = check_completion(doc, cursor, await doc.complete(cursor))
        assert texts or not trained, f"no candidate at hole {mark}"
        assert all(t.strip() for t in texts)
        answered += bool(texts)
    assert answered >= 3


async def test_typed_prefix(client, trained):
    """`params.it|`: the candidates complete the whole expression consistently
    with what is typed, and their edits replace the typed part."""
    text = textwrap.dedent("""\
        def total(params):
            n = 0
            for key, value in params.items():
                n += value
            return n


        def keys(params):
            return sorted(params.it)
        """)
    cursor = text.index("params.it)") + len("params.it")
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained
    for it in result.items:
        a = index_of(doc.text, it.text_edit.range.start)
        assert a <= cursor - len("it"), "the edit must cover the typed part"
        typed = doc.text[a:cursor]
        assert it.text_edit.new_text.startswith(typed)


@pytest.mark.parametrize("typed, closed", [
    ("res[", ""), ("res[", "]"), ("compute(width, ", ""), ("compute(width, ", ")"), ("width > 0 and ", ""),
])
async def test_typed_open_expression(client, trained, typed, closed):
    """`res[|`, `f(a, |`, `a and |`, with and without the bracket the editor closed: every edit
    replaces the typed text (and that bracket) with a whole expression, so the line parses."""
    head = "def area(res, width, compute):\n    value = "
    text = head + typed + closed + "\n    return value\n"
    start = len(head)
    cursor = start + len(typed)
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained
    check_replaces(doc, result, start, cursor + len(closed))
    for t in texts:
        assert t.startswith(typed) and t != typed + closed


async def test_open_call_searches_the_whole_call_first(client, trained):
    """`max(|`: the whole call is searched under the typed `max(`, so an answer can take more than
    the one argument the operand's own hole gives (`max(shape, height)`), with no fallback to that
    hole; so does a name found nowhere else (`qzxv(|`: the typed names count among the file's)."""
    if not trained:
        pytest.skip("needs the trained model")
    head = "def area(shape, scale):\n    width = shape.width * scale\n    height = shape.height * scale\n    value = "
    found = {}
    for typed, closed in [("max(", ""), ("max(", ")"), ("qzxv(", ""), ("qzxv(", ")")]:
        text = head + typed + closed + "\n    return value\n"
        start, cursor = len(head), len(head) + len(typed)
        doc = new_doc(client, text)
        before = (await stats(client)).typedSearches.fallback
        result = await doc.complete(cursor)
        texts = check_completion(doc, cursor, result)
        assert texts, typed + closed
        check_replaces(doc, result, start, cursor + len(closed))
        found[typed + closed] = ((await stats(client)).typedSearches.fallback - before, texts)
    for key in ("max(", "max()"):
        fallbacks, texts = found[key]
        assert fallbacks == 0 and any(_arguments(t) > 1 for t in texts), texts
    for key in ("qzxv(", "qzxv()"):
        fallbacks, texts = found[key]
        assert all(t.startswith("qzxv(") for t in texts), texts


def _arguments(call: str) -> int:
    """How many arguments the call `call` has."""
    node = PARSER.parse(call.encode()).root_node.named_children[0].named_children[0]
    return node.child_by_field_name("arguments").named_child_count


async def test_bracket_left_open_before_a_comma(client, trained):
    """`partition=row[|,` (a bracket typed in a line that goes on): the parser takes the comma into
    the subscript; the typed `row[` is still the expression, and the answers replace it."""
    text = "def make(cls, row):\n    return cls(\n        key=row[\"key\"],\n        partition=row[,\n" \
        "        name=row[\"name\"],\n    )\n"
    start = text.index("row[,")
    cursor = start + len("row[")
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained
    check_replaces(doc, result, start, cursor)
    for t in texts:
        assert t.startswith("row[") and "]" in t, t


@pytest.mark.parametrize("head, typed, closed, tail", [
    ("    if ", "'MODULE", "", " in text:\n        return 1\n"),
    ("    if ", "'MODULE", "'", " in text:\n        return 1\n"),
    ("    return ", '", ', "", "\n"),
    ("    return ", '", ', '"', "\n"),
    ("    return ", "text['qzx", "", "\n"),
    ("    return ", "text['qzx", "']", "\n"),
    ("    return ", 'len("qz', "", "\n"),
    ("    return ", 'len("qz', '")', "\n"),
    ("    if ", "'MODULE' in", "", ":\n        return 1\n"),
    ("    if ", "'MODULE'", "", ":\n        return 1\n"),
])
async def test_typed_open_string(client, trained, head, typed, closed, tail):
    """A string literal being typed (`'MODULE|`, `", |`, `text['qzx|`), with and without the quote
    (and bracket) the editor closed: never an empty answer, every answer starts with exactly the
    typed text, replaces what the editor closed, and parses; the typed text closed is among them,
    after the model's expressions around the string where the model has them.  A typed string the
    model cannot spell, closed or not (`'MODULE' in|`, `'MODULE'|`), still gets the model's expressions."""
    text = "def f(text):\n" + head + typed + closed + tail
    start = len("def f(text):\n" + head)
    cursor = start + len(typed)
    doc = new_doc(client, text)
    before = (await stats(client)).typedSearches
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts, typed + closed
    check_replaces(doc, result, start, cursor + len(closed))
    assert all(t.startswith(typed) for t in texts), texts
    closed_literal = typed + grammar.closers(typed)
    if grammar.open_string(typed):
        assert texts.count(closed_literal) == 1, texts
    after_stats = (await stats(client)).typedSearches
    if after_stats.closed_string > before.closed_string:
        assert texts[-1] == closed_literal, texts      # added by the server: after the model's answers
    if trained and typed.startswith("'MODULE"):
        # the model cannot spell the string: another stands for it, the answers write the typed one
        assert after_stats.any_string == before.any_string + 1
        assert len(texts) > 1 and all(t.startswith("'MODULE' ") or t.startswith("'MODULE'.") for t in texts[:-1]), \
            texts


async def test_no_hole_is_empty_and_fast(client):
    text = textwrap.dedent("""\
        import os
        # a comment where nothing goes
        def function_name(a, b):
            return a
        class Klass:
            pass
        """)
    doc = new_doc(client, text)
    spots = [text.index("nothing") + 3, text.index("function_name") + 4, text.index("import ") + 7,
             text.index("Klass") + 2, text.index("def") + 1]
    for cursor in spots:
        t = time.monotonic()
        result = await doc.complete(cursor)
        ms = (time.monotonic() - t) * 1000
        assert list(result.items) == [], (text[cursor - 10:cursor], result.items)
        assert ms < 500, f"{ms:.0f} ms for an empty answer"


async def test_utf16_positions_after_non_ascii(client, trained):
    """Non-ASCII text (2-byte, 3-byte and astral characters) before the cursor on
    its line: positions go in and ranges come out in UTF-16 units."""
    text = textwrap.dedent("""\
        def greet(名前, émoji="😀"):
            message = "héllo 😀 " + 名前
            return message + émoji
        """)
    line = '    return message + émoji'
    cursor = text.index(line) + len("    return message + ")
    doc = new_doc(client, text[:cursor] + text[cursor + len("émoji"):])
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained
    # and a typed prefix made of non-ASCII characters: the range starts at its start
    doc2 = new_doc(client, text[:cursor + 2] + text[cursor + len("émoji"):])
    result = await doc2.complete(cursor + 2)
    for it in result.items:
        a = index_of(doc2.text, it.text_edit.range.start)
        assert a <= cursor + 2
        assert it.text_edit.new_text.startswith(doc2.text[a:cursor + 2])
    check_completion(doc2, cursor + 2, result)


async def test_burst_while_typing(client):
    """50 keystrokes, each followed by a completion request, without waiting: the
    last is answered, the others are cancelled (none answered late), and no model
    run goes on afterwards."""
    text = textwrap.dedent("""\
        def process(items, threshold):
            selected = []
            for item in items:
                if item.value > threshold:
                    selected.append(item)
            return 
        """)
    cursor = text.index("return ") + len("return ")
    doc = new_doc(client, text)
    await doc.complete(cursor)  # warm
    before = await stats(client)
    typed = "total_count+len(selected_items)*threshold_value-1+m"[1:]  # a hole at every keystroke
    assert len(typed) == 50
    futures = []
    for ch in typed:
        doc.edit(cursor, cursor, ch)
        cursor += 1
        futures.append(doc.send_completion(cursor))
    results = await asyncio.gather(*futures, return_exceptions=True)
    last = results[-1]
    assert isinstance(last, types.CompletionList), last
    check_completion(doc, cursor, last)
    cancelled = sum(isinstance(r, JsonRpcRequestCancelled) for r in results[:-1])
    others = [r for r in results[:-1] if not isinstance(r, (JsonRpcRequestCancelled, types.CompletionList))]
    assert not others, others
    # a keystroke where no expression can go is answered [] before the next one comes
    assert cancelled >= 40, f"only {cancelled} of 49 cancelled"
    after = await stats(client)
    assert not after.modelBusy and after.jobs == 0
    # runs of superseded requests stopped between beam steps (or never started)
    runs = after.modelRuns - before.modelRuns
    finished = runs - (after.modelRunsCancelled - before.modelRunsCancelled)
    assert finished <= 50 - cancelled + 3, (runs, finished, cancelled)
    t = time.monotonic()
    doc.edit(cursor, cursor, " ")
    await doc.complete(cursor + 1)
    assert time.monotonic() - t < 2.5  # nothing left running ahead of it


async def test_cancel_request(client):
    """$/cancelRequest on a request waiting behind another answers it cancelled."""
    text, (cursor,) = cut_returns(Path(argparse.__file__).read_text(), [60])
    big = new_doc(client, text)
    small = new_doc(client, "def f(a):\n    return \n")
    first = big.send_completion(cursor)
    second = small.send_completion(len("def f(a):\n    return "), msg_id="cancel-me")
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcRequestCancelled):
        await second
    assert isinstance(await first, types.CompletionList)


async def test_supersede(client):
    """A new request on the same document supersedes the one in flight."""
    text, (c1, c2) = cut_returns(Path(argparse.__file__).read_text(), [20, 40])
    doc = new_doc(client, text)
    first = doc.send_completion(c1)
    second = doc.send_completion(c2)
    r1, r2 = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(r1, JsonRpcRequestCancelled), r1
    assert isinstance(r2, types.CompletionList)
    check_completion(doc, c2, r2)


async def test_typing_along_cache(client):
    """Typing characters that agree with a shown candidate is answered from the
    cache, without the model; completion and inline completion at one place run
    the model once."""
    text = textwrap.dedent("""\
        import os


        def config_dir(home):
            path = os.path.join(home, ".config")
            if not os.path.isdir(path):
                os.makedirs(path)
            return 
        """)
    cursor = text.index("return ") + len("return ")
    doc = new_doc(client, text)
    s0 = await stats(client)
    first = await doc.complete(cursor)
    await doc.inline(cursor)
    s1 = await stats(client)
    assert s1.modelRuns - s0.modelRuns == 1
    texts = check_completion(doc, cursor, first)
    top = next((t for t in texts if len(t) >= 3), None)
    assert top is not None, texts
    doc.edit(cursor, cursor, top[:2])
    second = await doc.complete(cursor + 2)
    s2 = await stats(client)
    assert s2.modelRuns == s1.modelRuns and s2.cacheHits > s1.cacheHits
    texts2 = check_completion(doc, cursor + 2, second)
    assert top in texts2
    assert all(t.startswith(top[:2]) for t in texts2)
    # typing something no candidate has runs the model again
    doc.edit(cursor + 2, cursor + 2, "\u00e6")
    await doc.complete(cursor + 3)
    assert (await stats(client)).modelRuns == s2.modelRuns + 1


async def test_bad_input(client):
    """Unknown documents, positions outside the document, invalid params and
    edits to documents that are not open: empty answers or errors, never a crash."""
    text = "x = 1\ny = \n"
    doc = new_doc(client, text)
    unknown = Doc.__new__(Doc)
    unknown.client, unknown.uri, unknown.text, unknown.encoding = client, "file:///nope.py", text, "utf-16"
    assert list((await unknown.complete(len("x = 1\ny = "))).items) == []
    for line, char in [(3, 0), (99, 0), (1, 99), (0, 6)]:
        params = types.CompletionParams(types.TextDocumentIdentifier(doc.uri), types.Position(line, char))
        result = await client.text_document_completion_async(params)
        assert list(result.items) == []
    inline = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(doc.uri), position=types.Position(50, 3)))
    assert list(inline.items) == []
    notes = Doc.__new__(Doc)
    notes.client, notes.uri, notes.text, notes.encoding = client, "file:///work/notes.md", text, "utf-16"
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
        uri=notes.uri, language_id="markdown", version=1, text=text)))
    assert list((await notes.complete(len("x = 1\ny = "))).items) == []  # not Python
    with pytest.raises(JsonRpcInvalidParams):
        await raw_request(client, types.TEXT_DOCUMENT_COMPLETION, {
            "textDocument": {"uri": doc.uri}, "position": {"line": -1, "character": "x"}})
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///nope.py", version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(0, 0), types.Position(0, 0)), text="z")]))
    # an edit whose range runs past the end is clamped, as the spec says
    doc.edit(len(text), len(text), "")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version + 1),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(1, 4), types.Position(40, 0)), text="2\n")]))
    st = await stats(client)
    assert [d.bytes for d in st.documents if d.uri == doc.uri] == [len("x = 1\ny = 2\n")]
    assert not [d for d in st.documents if d.uri == "file:///nope.py"]


async def test_huge_file(client):
    """A document over the size limit gets empty answers at once; the server stays
    responsive."""
    one = Path(argparse.__file__).read_text()
    text = one * ((16 << 20) // len(one.encode()) + 1)  # just over 16 MiB
    doc = new_doc(client, text)
    await stats(client)   # the open handled (reading 16 MiB of JSON is not what is timed)
    t = time.monotonic()
    result = await doc.complete(text.index("return ") + 7)
    assert list(result.items) == []
    assert time.monotonic() - t < 1.0
    client.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(doc.uri)))
    assert (await stats(client)).state in ("ready", "error")


async def test_large_file_answers(client):
    """A large file under the limit (~1 MB) is answered (or cancelled by nobody),
    and a later small request is not held up for long."""
    text, (cursor,) = cut_returns(Path(argparse.__file__).read_text() * 10, [-10])
    doc = new_doc(client, text)
    t = time.monotonic()
    result = await doc.complete(cursor)
    check_completion(doc, cursor, result)
    assert time.monotonic() - t < 10


async def test_status_progress_and_no_torch(client):
    assert [s.state for s in client.statuses[:2]] == ["loading", "ready"]
    assert client.statuses[1].device in ("cpu", "cuda")
    (token, reports), = [(k, v) for k, v in client.progress_reports.items() if k.startswith("anycode-load")][:1]
    assert [r.kind for r in reports] == ["begin", "end"]
    await asyncio.sleep(0.3)  # the throttled status after the last completion
    assert any(getattr(s, "lastLatencyMs", None) is not None for s in client.statuses)
    assert any("model loaded" in m.message for m in client.log_messages)
    assert any(m.message.startswith("completion ") for m in client.log_messages)
    st = await stats(client)
    assert st.torchLoaded is False


@pytest.mark.parametrize("text, typed", [
    ("def render(name, str):\n    return Template(str<|>.substitute(name=name)\n", "Template(str"),
    ("class Model(Base):\n    def __init__(self, config):\n        super()<|>(config)\n", "super()"),
    ("def chunks(keys, size):\n    return [keys[i : i + size] for i in range(0, len(keys<|>, size)]\n", "len(keys"),
    ("def ready(stream):\n    if poll_ready(<|> or stream.closed:\n        return 1\n", "poll_ready("),
    ("def cli_args(params):\n    return {\n        name.upper(): encode_param(value<|>\n"
     "        for name, value in params.items()\n    }\n", "encode_param(value"),
])
async def test_typed_start_glued_to_the_text_after(client, trained, text, typed):
    """A typed expression the text after the cursor continues (`Template(str|.substitute(`,
    `super()|(config)`, `len(keys|, size)]`, a call's argument glued to the `for` of the next
    line): the parse of the buffer takes the text after the cursor into the typed expression, yet
    every answer is an expression from the typed start that, followed by that text, parses in
    place; and there is one (before, none was, or none that parsed)."""
    cursor = text.index("<|>")
    text = text.replace("<|>", "")
    start = cursor - len(typed)
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained, typed
    check_replaces(doc, result, start, cursor)
    assert all(t.startswith(typed) and t != typed for t in texts), texts


RARE_NAMES = [
    ('class Fit:\n    def __init__(self, fit_type: str, fit_args=()):\n        self.fit_type = NameObject(fit_type)\n'
     '        self.fit_args = [FloatObject(a) for a in fit_args]\n\n    @classmethod\n'
     '    def xyz(cls, left=None, top=None, zoom=None) -> "Fit":\n'
     '        return Fit(fit_type="/XYZ", fit_args=(left, top, zoom))\n\n    @classmethod\n'
     '    def fit(cls) -> "Fit":\n        return Fit(fit_type<|>\n', "Fit(fit_type"),
    ("class AllPartitionsSubset(PartitionsSubset):\n    def empty_subset(self) -> PartitionsSubset:\n"
     "        return self.partitions_def.empty_subset()\n\n    @classmethod\n"
     "    def create_empty_subset(cls, partitions_def=None) -> PartitionsSubset:\n"
     "        return check.not_none<|>\n", "check.not_none"),
    ("def decorate(__obj, disable_dagster_warnings):\n    if callable(__obj):\n"
     "        return apply_context_manager_decorator(__obj<|>\n", "apply_context_manager_decorator(__obj"),
]


@pytest.mark.parametrize("text, typed", RARE_NAMES, ids=["keyword", "attribute", "argument"])
async def test_typed_rare_names_answer(client, trained, text, typed):
    """A typed start whose names the model spells only at a high cost (`Fit(fit_type|`,
    `check.not_none|`): the trees that print it compete with each other, not with trees that open
    cheap nodes around it and spell it later (`Fit(fit_type for fit_type in cls).strip().strip()...`),
    which the search then dropped as chains it was lost in: before, an empty answer."""
    if not trained:
        pytest.skip("needs the trained model")
    cursor = text.index("<|>")
    text = text.replace("<|>", "")
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts, typed
    check_replaces(doc, result, cursor - len(typed), cursor)
    assert all(t.startswith(typed) for t in texts), texts


async def test_typed_string_with_others_closed_after(client, trained):
    """`(r"\\{|}")`: the editor closed more than the typed text leaves open (a `{` inside the typed
    string, then the string and the bracket): the answers replace the typed text and all of those
    closers, and the line parses (before, no answer: the text after the cursor, kept, broke each)."""
    head = "def rules(ttype):\n    return [\n        (r\"\\}\", String.Interpol),\n        "
    typed, closed = '(r"\\{', '}")'
    text = head + typed + closed + ",\n        (r'[\\'\"\\\\]', ttype),\n    ]\n"
    start, cursor = len(head), len(head) + len(typed)
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained
    check_replaces(doc, result, start, cursor + len(closed))
    assert all(t.startswith(typed) for t in texts), texts


@pytest.mark.parametrize("lead, typed, closed, after", [
    ("", "'.'", "", ""), ("", "'.", "", ""), ("", "'.", "'", ""), ("", "sep.jo", "", ""), ("", "len(ke", "", ""),
    ("len(", "ke", "", ")"),
])
async def test_typed_in_fstring_braces(client, trained, lead, typed, closed, after):
    """An expression typed in an f-string's braces (`f"Key {'.'|} missing"`), with and without what
    the editor closed: answered as the expression where the literal stands, each answer replacing
    the typed text in the braces, so the line parses (before, no hole: the model's tree has the
    literal as one value)."""
    head = "def check(keys, sep, config):\n    for key in keys:\n        if key not in config:\n" \
        "            raise KeyError(f\"Key {" + lead
    await check_field(client, trained, head, typed, closed, after + "} not in config\")\n    return config\n")


@pytest.mark.parametrize("typed, closed", [("", ""), ("sep.jo", ""), ("len(ke", "")])
async def test_in_fstring_braces_of_a_concatenation(client, trained, typed, closed):
    """The braces of an f-string written after another literal, as long messages are
    (`"Keys " f"{|} missing"` over two lines): the expression stands where the whole concatenation
    does (beside another literal it would not parse), so even an empty field has answers, each
    replacing what is typed in the braces."""
    head = "def check(keys, sep, config):\n    if keys:\n        raise KeyError(\n            \"Keys \"\n" \
        "            f\"{"
    await check_field(client, trained, head, typed, closed, "} not in config\"\n        )\n    return config\n")


async def check_field(client, trained, head: str, typed: str, closed: str, tail: str) -> None:
    """Complete after `typed` in an f-string's braces (`head` ends in them; the editor closed `closed`):
    answers where the model is trained, each starting with the typed text and replacing it and `closed`."""
    text = head + typed + closed + tail
    start, cursor = len(head), len(head) + len(typed)
    doc = new_doc(client, text)
    result = await doc.complete(cursor)
    texts = check_completion(doc, cursor, result)
    assert texts or not trained, typed + closed
    check_replaces(doc, result, start, cursor + len(closed))
    assert all(t.startswith(typed) for t in texts), texts
