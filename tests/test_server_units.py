"""The server's pieces without a process: documents (positions in three encodings,
incremental edits against a reference, the tree following them), the
typing-along cache, settings, LSP edits for candidates."""
from __future__ import annotations

import random

import pytest
from lsprotocol import types

from anycode.server import settings
from anycode import grammars
from anycode.server.documents import UTF8, UTF16, UTF32, Document
from anycode.server.lsp import AnycodeServer, Snapshot, completion_items, percent
from anycode.model.completer import Candidate
from anycode.server.typealong import TypeAlongCache

PARSER = grammars.get("python").new_parser()


def width(ch: str, enc: str) -> int:
    if enc == UTF8:
        return len(ch.encode())
    if enc == UTF16:
        return 2 if ord(ch) > 0xFFFF else 1
    return 1


def test_positions_in_three_encodings():
    text = "é😀a = 'ü'\nb\r\nc"
    d = Document.from_text("u", text, 1)
    assert d.line_starts.tolist() == [0, 15, 18]
    assert d.line_bounds(1) == (15, 16)  # "\r\n" is one line end
    # (line, character) -> byte offset, per encoding; mid-character positions round down
    assert [d.offset_at(0, c, UTF16) for c in range(5)] == [0, 2, 2, 6, 7]
    assert [d.offset_at(0, c, UTF32) for c in range(4)] == [0, 2, 6, 7]
    assert [d.offset_at(0, c, UTF8) for c in (0, 1, 2, 6)] == [0, 0, 2, 6]
    assert d.position_at(6, UTF16) == (0, 3) and d.position_at(6, UTF32) == (0, 2)
    assert d.position_at(6, UTF8) == (0, 6)
    # outside the document: None, or clamped for edits
    assert d.offset_at(1, 2) is None and d.offset_at(3, 0) is None and d.offset_at(-1, 0) is None
    assert d.offset_at(1, 2, clamp=True) == 16 and d.offset_at(9, 9, clamp=True) == len(d.text)


@pytest.mark.parametrize("enc", [UTF16, UTF8, UTF32])
def test_incremental_edits_match_a_reference(enc):
    """Random edits in LSP positions (and whole-document changes, narrowed to
    what differs): the bytes, the line index and the tree (edited and reparsed
    incrementally) match a fresh document every time."""
    rnd = random.Random(7)
    pieces = ["a", "b", "\n", "é", "😀", " ", "(", ")", "\r\n", "x = 1\n", "def f():\n    return 2\n"]
    text = "def f(a):\n    return a\n"
    d = Document.from_text("u", text, 0)
    d.tree(PARSER)
    for it in range(1500):
        lines = text.split("\n")

        def pick():
            ln = rnd.randrange(len(lines))
            line = lines[ln][:-1] if ln < len(lines) - 1 and lines[ln].endswith("\r") else lines[ln]
            k = rnd.randrange(len(line) + 1)
            return (ln, sum(width(c, enc) for c in line[:k])), sum(len(x) + 1 for x in lines[:ln]) + k

        (a, ia), (b, ib) = pick(), pick()
        if ib < ia:
            a, b, ia, ib = b, a, ib, ia
        if rnd.random() < 0.7:
            b, ib = a, ia
        new = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(4)))
        text = text[:ia] + new + text[ib:]
        if rnd.random() < 0.1:  # a client that sends the whole document
            d.apply_change(None, None, text, enc)
        else:
            d.apply_change(a, b, new, enc)
        d.version += 1
        assert d.text == text.encode(), it
        if it % 100 == 0:
            assert d.line_starts.tolist() == Document.from_text("u", text, 0).line_starts.tolist()
            assert str(d.tree(PARSER).root_node) == str(PARSER.parse(d.text).root_node)
    assert d.line_starts.tolist() == Document.from_text("u", text, 0).line_starts.tolist()


def test_parsed_once_per_version():
    d = Document.from_text("u", "x = 1\n", 1)
    d.tree(PARSER)
    d.tree(PARSER)
    for i, ch in enumerate("y = 2"):
        d.apply_change((1, i), (1, i), ch)
    d.version = 2
    tree = d.tree(PARSER)
    assert d.parses == 2 and not tree.root_node.has_error
    assert tree.root_node.children[1].text == b"y = 2"


def test_in_comment():
    src = "x = 1  # note\ny = f(a, )\n"
    d = Document.from_text("u", src, 1, "python")
    at = lambda s: src.index(s) + len(s)  # noqa: E731
    assert d.in_comment(PARSER, at("# no")) and d.in_comment(PARSER, at("# note"))
    assert not d.in_comment(PARSER, at("x = 1 ")) and not d.in_comment(PARSER, at("f(a, "))


def test_typealong_cache():
    cache = TypeAlongCache()
    src = b"y = \nz = 1\n"
    cur = 4
    cache.store("u", src, cur, [Candidate("foo(1)", -0.5, 4, 4), Candidate("fob", -1.0, 4, 4), Candidate("bar", -2, 4, 4)])
    assert [c.text for c in cache.lookup("u", src, cur)] == ["foo(1)", "fob", "bar"]  # asked again
    typed = b"y = fo\nz = 1\n"
    hit = cache.lookup("u", typed, 6)
    assert [(c.text, c.start, c.end) for c in hit] == [("foo(1)", 4, 6), ("fob", 4, 6)]
    assert cache.lookup("u", b"y = fob\nz = 1\n", 7) is None           # fully typed: nothing left
    assert cache.lookup("u", b"y = fx\nz = 1\n", 6) is None            # disagrees
    assert cache.lookup("u", b"y = fo\nz = 2\n", 6) is None            # something else changed
    assert cache.lookup("u", b"y = \nz = 1\n", 3) is None              # moved back
    assert cache.lookup("other", typed, 6) is None
    cache.drop("u")
    assert cache.lookup("u", src, cur) is None
    # an answer that also replaces the bracket after the cursor: the same request again, not typing on
    src = b"y = res[]\n"
    cache.store("u", src, 8, [Candidate("res[key]", -0.5, 4, 9), Candidate("res[0]", -1.0, 4, 9)])
    assert [(c.text, c.start, c.end) for c in cache.lookup("u", src, 8)] == [("res[key]", 4, 9), ("res[0]", 4, 9)]
    assert cache.lookup("u", b"y = res[k]\n", 9) is None


def test_settings_parse():
    s, w = settings.parse({"anycode": {"beamSize": 3, "maxItems": 0, "device": "CUDA", "threads": True,
                                       "timeBudgetMs": 250.0, "modelPath": " ~/m ", "other": 1}})
    assert (s.beamSize, s.maxItems, s.device, s.threads, s.timeBudgetMs) == (3, 5, "cuda", 0, 250)
    assert s.modelPath.endswith("/m") and not s.modelPath.startswith("~")
    assert len(w) == 2 and any("maxItems" in x for x in w) and any("threads" in x for x in w)
    # layers: later ones win key by key; null means the default; flat sections work too
    s, w = settings.parse({"maxItems": 2, "beamSize": 4}, {"anycode": {"beamSize": None, "device": "cpu"}})
    assert (s.maxItems, s.beamSize, s.device, w) == (2, 5, "cpu", [])
    assert settings.parse(None, "junk", [1])[0] == settings.DEFAULTS
    s, w = settings.parse({"searchRanking": " BM25 "}, {"anycode": {"device": "gpu"}})
    assert (s.searchRanking, s.device) == ("bm25", "auto") and len(w) == 1 and "device" in w[0]
    s, w = settings.parse({"searchRanking": "encoders"})
    assert s.searchRanking == "auto" and "searchRanking" in w[0] and "auto, bm25" in w[0]


def test_completion_items_for_candidates():
    server = AnycodeServer()
    src = "def f(params):\n    return sorted(params.it)\n"
    doc = Document.from_text("u", src, 1)
    cursor = src.index("params.it)") + len("params.it")
    start = src.index("params.it)")
    snap = Snapshot("u", 0.0, doc, 1, doc.text, cursor)
    items = completion_items(server, snap, [Candidate("params.items()", -0.1, start, cursor),
                                            Candidate("params.iter", -2.5, start, cursor)])
    assert [i.sort_text for i in items] == ["0000", "0001"]
    assert items[0].detail == percent(-0.1) == "anycode 90.5%"
    assert items[0].text_edit.range == types.Range(types.Position(1, 18), types.Position(1, 27))
    assert items[0].filter_text == "params.items()" and items[0].label == "params.items()"
    # a typed part that starts on an earlier line: the edit keeps to the cursor's line
    src2 = "x = (a +\n     b"
    doc2 = Document.from_text("u", src2, 1)
    snap2 = Snapshot("u", 0.0, doc2, 1, doc2.text, len(src2))
    start2 = src2.index("a +")
    items2 = completion_items(server, snap2, [Candidate("a +\n     bc", -1, start2, len(src2)),
                                              Candidate("z", -1, start2, len(src2))])
    assert len(items2) == 1
    assert items2[0].text_edit.range.start == types.Position(1, 0)
    assert items2[0].text_edit.new_text == "     bc"
