"""The Completer end to end: real files, real tree-sitter, the ONNX model through ONNX Runtime.

The model: $ANYCODE_TEST_MODEL (an exported directory), else model/shipped when it has
been exported, else an untrained SLM (narrow, so the file runs in well under a minute on
two cores) exported the way the shipped one is.  Random weights make poor completions,
so the tests check what must hold for any weights: candidates parse in their context,
respect what was typed and replace the right range; positions where no expression can
go return []; cancellation, deadlines and bad input behave; the caches are used.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anycode.grammars import python as grammar
from anycode.model import dataset, holes
from anycode.model.beam import ScoreMemo
from anycode.model.runtime import SHIPPED, Cancelled, Completer, ModelError

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
SMALL = dict(d_type=96, d_index=32, d_subtoken=128, d_lstm=64, n_layers=2, n_heads=4, d_ff=256)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    if os.environ.get("ANYCODE_TEST_MODEL"):               # an exported model directory
        return Path(os.environ["ANYCODE_TEST_MODEL"])
    if (SHIPPED / "manifest.json").exists():
        return SHIPPED
    from slm_fixtures import tiny_dataset

    from anycode.model.checkpoint import load_model
    from anycode.model.export import export, write_untrained_checkpoint
    root = tiny_dataset(tmp_path_factory.mktemp("ds"))
    ckpt = write_untrained_checkpoint(root, tmp_path_factory.mktemp("ckpt"), **SMALL)
    out = tmp_path_factory.mktemp("model")
    export(*load_model(ckpt), out, "fp16", ckpt / "grammar.json")
    return out


@pytest.fixture(scope="session")
def completer(model_dir) -> Completer:
    c = Completer(model_dir, device="cpu", threads=2)
    if c.manifest.get("untrained"):
        c.soft_steps, c.max_steps, c.max_depth = 8, 24, 4     # random trees close sooner
    return c


def holes_of(path: Path, n: int, seed: int = 0):
    """(source with the target cut out, cursor, target text) for n real holes of a file."""
    source = path.read_bytes()
    found = []
    for flat, hs, _ in dataset.extract_file(str(path), name=path.name, lang=grammar.PYTHON).functions:
        for h in hs:
            a, b = flat.start_byte[h], flat.end_byte[h]
            found.append((source[:a] + source[b:], a, source[a:b].decode()))
    random.Random(seed).shuffle(found)
    return found[:n]


def parses(source: bytes) -> bool:
    return not grammar.new_parser().parse(source).root_node.has_error


def test_candidates_parse_in_context(completer):
    total = 0
    for path in sorted(DATA.glob("*.py")):
        for src, cursor, _ in holes_of(path, 2):
            items = completer.complete(src, cursor, uri=path.as_uri())
            assert len(items) <= 5
            assert [c.logprob for c in items] == sorted((c.logprob for c in items), reverse=True)
            for c in items:
                assert c.start == c.end == cursor
                assert c.logprob <= 0
                assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text
            total += len(items)
    assert total > 0


def test_hypotheses_steered_closed_are_not_offered(model_dir):
    """A hypothesis that closed only because the search steered it closed (past soft_steps) is
    dropped: with the bound below every target's length, nothing is left to offer."""
    c = Completer(model_dir, device="cpu", threads=2)
    src, cursor, _ = holes_of(DATA / "reprlib.py", 1)[0]
    c.soft_steps = 3                     # every target takes more steps (root, child, value, EOS...)
    c.drop_forced = False
    assert c.complete(src, cursor)       # steered closed, offered
    c.drop_forced = True
    assert c.complete(src, cursor) == []
    assert c.stats["dropped_forced"] > 0


def test_typed_prefix_is_kept_and_replaced(completer):
    """The user typed the start of the expression: candidates extend it and replace it."""
    checked = 0
    for path in sorted(DATA.glob("*.py")):
        for src, cursor, target in holes_of(path, 4, seed=1):
            first = target[: max(1, min(3, len(target.split(".")[0].split("(")[0]) - 1))]
            if not first.isidentifier():
                continue
            typed_src = src[:cursor] + first.encode() + src[cursor:]
            end = cursor + len(first.encode())
            items = completer.complete(typed_src, end, uri=path.as_uri())
            assert completer.last["typed"] == first
            for c in items:
                assert (c.start, c.end) == (cursor, end)
                assert "".join(c.text.split()).startswith(first) and c.text != first
                assert parses(typed_src[: c.start] + c.text.encode() + typed_src[c.end:]), c.text
            checked += len(items)
    assert checked > 0


def test_mid_word_cursor_replaces_the_whole_word(completer):
    src = b"def f(values, limit):\n    total = sum(values)\n    return min(total, lim)\n"
    cursor = src.index(b"lim)") + 2
    items = completer.complete(src, cursor)
    assert completer.last["start"] == cursor - 2 and completer.last["end"] == cursor + 1
    for c in items:
        assert c.text.startswith("li")


@pytest.mark.parametrize("src", [
    b"def f(a):\n    # a comment |here\n    return a\n",
    b"def f(a):\n    s = 'inside a |string'\n    return s\n",
    b"def |",
    b"def f(|):\n    pass\n",
    b"def f(a):\n    for | in a:\n        pass\n",
    b"import |\n",
    b"def f(a):\n    a.upd|\n",                  # a statement of its own: the dataset has no such targets
    b"class |:\n    pass\n",
    b"x = 1|\n",
])
def test_no_expression_here(completer, src):
    cursor = src.index(b"|")
    src = src[:cursor] + src[cursor + 1:]
    t = time.perf_counter()
    assert completer.complete(src, cursor) == []
    assert time.perf_counter() - t < 0.2


def test_repaired_unclosed_call(completer):
    """`sorted(|` with no `)` in the buffer: the answer is the whole call, closed, over what is typed."""
    src = b"def f(items, key):\n    result = sorted(\n    return result\n"
    start = src.index(b"sorted(")
    cursor = start + len(b"sorted(")
    items = completer.complete(src, cursor)
    assert items
    for c in items:
        assert (c.start, c.end) == (start, cursor)
        assert c.text.startswith("sorted(") and c.text.endswith(")") and c.text != "sorted()"
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


def test_operand_after_auto_closed_bracket(completer):
    """`res[|]` (the editor closed the bracket): the answer replaces `res[]` with a whole subscript."""
    src = b"def f(res, key):\n    value = res[]\n    return value\n"
    start = src.index(b"res[]")
    items = completer.complete(src, start + 4)
    assert items
    for c in items:
        assert (c.start, c.end) == (start, start + 5)
        assert c.text.startswith("res[") and c.text.endswith("]") and c.text.count("]") >= 1
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


def test_whole_expression_answering_nothing_falls_back_to_the_operand_hole(completer, monkeypatch):
    """`max(|`: when the search of the whole call under the typed `max(` answers nothing (here every
    answer is refused as not adding to the typed text), the operand's own hole answers: `max(` + one
    argument + `)`, replacing the typed text."""
    from anycode.model.prefix import Prefix
    monkeypatch.setattr(Prefix, "adds", lambda self, text: False)
    src = b"def area(shape, scale):\n    width = shape.width * scale\n    value = max(\n    return value\n"
    start = src.index(b"max(")
    cursor = start + len(b"max(")
    items = completer.complete(src, cursor)
    assert items and completer.last.get("fallback") and completer.stats["fallback"] >= 1
    for c in items:
        assert (c.start, c.end) == (start, cursor) and c.text.startswith("max(") and c.text.endswith(")")
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


@pytest.mark.parametrize("typed, lead", [("time /", "time / "), ("width -", "width - "),
                                         ("max(width,", "max(width, "), ("f(a, *", "f(a, *")])
def test_operand_hole_answers_are_spaced_as_printed(completer, monkeypatch, typed, lead):
    """`time /|` with no space typed yet: the operand hole's answers write the space the printer puts
    after a binary operator or a comma (`time / x`, not `time /x`), and none after a splat."""
    from anycode.model.prefix import Prefix
    monkeypatch.setattr(Prefix, "adds", lambda self, text: False)      # the whole expression answers nothing
    src = ("def rate(time, width, scale, a, f):\n    value = " + typed + "\n    return value\n").encode()
    cursor = src.index(typed.encode()) + len(typed)
    hole = holes.find_typed_hole(src, cursor, lang=completer.lang, parser=completer.parser, table=completer.table)
    operand = hole if hole.lead else hole.fallback      # first after a long start, else the fallback
    assert operand is not None and operand.lead == lead
    items = completer.complete(src, cursor)
    assert items
    for c in items:
        assert c.text.startswith(lead) and not c.text[len(lead):].startswith(" "), c.text
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


@pytest.mark.parametrize("typed", ["", "len(mat_results) == 0 and ", "isinstance(obj, dict) and "])
def test_no_answer_is_redundant(completer, typed):
    """`top = |` after `words = f.read().split()`: the shipped model's likeliest tree is
    `words.get(words)`, a method handed its own receiver, which the search does not count as an
    answer; after a typed `isinstance(obj, dict) and |` it was the operand that repeats it.  Every
    answer the completer gives, as written, is one the language calls not redundant."""
    src = (ROOT / "examples" / "demo.py").read_bytes()
    cursor = src.index(b"top = ") + len(b"top = ")
    srcs = [(src, cursor)] + [(s, c) for name in ("getopt.py", "string.py") for s, c, _ in holes_of(DATA / name, 10)]
    if typed:
        src = f"def check(mat_results, obj):\n    if {typed}\n        return obj\n".encode()
        srcs = [(src, src.index(b" \n") + 1)]
    for source, at in srcs:
        for c in completer.complete(source, at):
            node = completer.lang.parse_expression(c.text)
            assert node is None or not completer.lang.redundant(node), c.text


def test_a_beam_the_model_fills_with_redundant_trees_still_answers(completer):
    """`return |` after `reindenter = Reindenter(source, leave_tabs)`: the shipped model's likeliest
    trees hand `reindenter` to its own method (`reindenter.reindent(reindenter, ...`), each refused as
    an answer only once it closed, so the beam spent its steps on them and answered one tree.  A
    partial tree is dropped as soon as it holds the repetition, and the beam finds the others."""
    src = (b'def reindent(source, indent_size, leave_tabs=False):\n    """Reindent all lines."""\n'
           b'    reindenter = Reindenter(source, leave_tabs)\n    return \n')
    texts = [c.text for c in completer.complete(src, src.index(b"return ") + len(b"return "))]
    if completer.manifest.get("untrained"):
        pytest.skip("the trees are a trained model's")
    assert len(texts) >= 3, texts
    for text in texts:
        assert not completer.lang.redundant(completer.lang.parse_expression(text)), text


def test_an_answer_is_judged_redundant_as_written(completer):
    """Typed `... or "tkinter|`: the model's tree has its likeliest string, "Tkinter", where the
    typed one stands (`"Tkinter" in sys.modules or "Tkinter" in sys.modules`, a repetition), but the
    answer writes the user's string, `... or "tkinter" in sys.modules`, which is none: it is offered."""
    src = (b'import sys\n\n\ndef inputhook(inputhook_context):\n'
           b'    # Only call the real input hook when the \'Tkinter\' library was loaded.\n'
           b'    if "Tkinter" in sys.modules or "tkinter\n        _inputhook_tk(inputhook_context)\n')
    cursor = src.index(b'"tkinter') + len(b'"tkinter')
    texts = [c.text for c in completer.complete(src, cursor)]
    if completer.manifest.get("untrained"):
        pytest.skip("the answer is a trained model's")
    assert '"Tkinter" in sys.modules or "tkinter" in sys.modules' in texts, texts


@pytest.mark.parametrize("typed", ["query is not None and ", "spawn(self.run_app, environ, "])
def test_long_start_before_an_empty_operand_searches_the_operand_first(completer, typed):
    """`query is not None and |`: the whole expression would have to print the typed start again
    before reaching the operand; the operand's own hole is searched first, its answers the typed text,
    one operand and the closers, over the typed text (and the `)` the editor closed)."""
    closed = ")" if typed.startswith("spawn(") else ""
    src = ("def run(self, query, environ, spawn):\n    value = " + typed + closed + "\n    return value\n").encode()
    start = src.index(typed.encode())
    cursor = start + len(typed)
    items = completer.complete(src, cursor)
    assert completer.last["typed"] == "" and not completer.last.get("fallback")
    assert items or completer.manifest.get("untrained")
    for c in items:
        assert (c.start, c.end) == (start, cursor + len(closed)), c
        assert c.text.startswith(typed.rstrip()) and c.text.endswith(closed), c.text
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


def test_long_start_ending_in_a_whole_operand_searches_that_operand_first(completer):
    """`"Tkinter" in sys.modules or "tkinter"|`: the typed start reaches back over the whole `or` (a
    finished literal is no name being typed), which the search would have to print again; the last
    operand's hole goes first, typed as `"tkinter"`, the whole expression its fallback."""
    src = b'import sys\n\n\ndef gui():\n    if "Tkinter" in sys.modules or "tkinter":\n        return 1\n'
    start = src.index(b'"tkinter"')
    cursor = start + len(b'"tkinter"')
    hole = holes.find_typed_hole(src, cursor, lang=completer.lang, parser=completer.parser, table=completer.table)
    assert (hole.typed, hole.start, hole.end) == ('"tkinter"', start, cursor)
    assert hole.fallback is not None and hole.fallback.typed == '"Tkinter" in sys.modules or "tkinter"'
    items = completer.complete(src, cursor)
    assert items or completer.manifest.get("untrained")
    for c in items:
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text
        if not completer.last.get("fallback"):
            assert (c.start, c.end) == (start, cursor) and c.text.startswith('"tkinter"'), c


def test_typed_name_found_nowhere_else_is_written(completer):
    """`os.getppid|`: the typed text is taken out of the search's buffer, and `getppid` is nowhere
    else in the file nor in the vocabulary; the typed names count among the file's, so the search can
    write it and answers."""
    if completer.manifest.get("untrained"):
        pytest.skip("needs the trained model")
    src = b"import os\n\n\ndef orphaned(parent_pid):\n    return os.getppid != parent_pid\n"
    cursor = src.index(b" != ")
    start = src.index(b"os.getppid")
    items = completer.complete(src, cursor)
    assert items
    for c in items:
        assert (c.start, c.end) == (start, cursor) and c.text.startswith("os.getppid"), c.text
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


@pytest.mark.parametrize("typed", ["i + 2 if ", "ch not ", "a if b else "])
def test_operand_that_does_not_finish_the_expression(completer, typed):
    """`a if |` needs an `else` and `x not |` an `in`: an answer is still one whole expression."""
    src = f"def f(i, ch, a, b, chars):\n    n = {typed}\n    return n\n".encode()
    cursor = src.index(b"\n    return")
    for c in completer.complete(src, cursor):
        assert c.text.startswith(typed.rstrip()), c.text
        assert grammar.parse_expression(c.text) is not None, c.text
        assert parses(src[: c.start] + c.text.encode() + src[c.end:]), c.text


def test_typed_start_lost_by_a_narrow_beam_is_searched_wider(completer):
    """`inspect(op.|())`: attribute chains that agree with `op.` fill a beam of 5 and the short
    answers never finish; the search runs again wider and answers."""
    src = (DATA / "typed" / "dagster_alembic_005.py").read_bytes()
    at = src.index(b"op.get_bind()")
    buf = src[:at] + b"op." + src[at + len(b"op.get_bind"):]
    if completer.manifest.get("untrained"):
        pytest.skip("needs the trained model")
    items = completer.complete(buf, at + 3)
    assert items and all(c.text.startswith("op.") and (c.start, c.end) == (at, at + 3) for c in items)
    for c in items:
        assert parses(buf[: c.start] + c.text.encode() + buf[c.end:]), c.text


def test_cancellation(completer):
    src, cursor, _ = holes_of(DATA / "string.py", 1)[0]
    with pytest.raises(Cancelled):
        completer.complete(src, cursor, cancelled=lambda: True)
    calls = []

    def later():
        calls.append(1)
        return len(calls) > 3
    with pytest.raises(Cancelled):
        completer.complete(src, cursor, cancelled=later)


def test_deadline(completer):
    src, cursor, _ = holes_of(DATA / "getopt.py", 1)[0]
    assert completer.complete(src, cursor, deadline=time.monotonic() - 1) == []
    t = time.perf_counter()
    completer.complete(src, cursor, deadline=time.monotonic() + 0.05)
    assert time.perf_counter() - t < 1.0
    assert completer.last.get("stopped") or completer.last.get("total_ms", 0) < 1000


def _real_holes():
    """One hole of each test file (the dataset's protocol), all where the model has an answer."""
    return [h for path in sorted(DATA.glob("*.py")) for h in holes_of(path, 2, seed=1)]


def test_deadline_all_but_passed_still_answers(completer, monkeypatch):
    """A budget that is gone before the search starts (the deadline is the request's start: a fixed
    few ms were not always gone once hole finding got fast): instead of nothing, the search closes
    its best live hypothesis at width 1, and the request ends within the hard deadline."""
    monkeypatch.setattr(completer, "overshoot", 1.0)      # the answer, not this machine's load, is tested
    answered, closing = 0, []
    for src, cursor, _ in _real_holes():
        t = time.monotonic()
        items = completer.complete(src, cursor, deadline=t)
        assert time.monotonic() - t < completer.overshoot + 0.3     # the hard deadline and a step
        for c in items:
            assert c.start == c.end == cursor
            assert parses(src[:cursor] + c.text.encode() + src[cursor:]), c.text
        answered += bool(items)
        closing.append((completer.last.get("closing_from"), completer.last["steps"] <= completer.close_steps))
    assert answered >= len(closing) - 1          # one may close into a tree that does not verify
    assert closing == [(0, True)] * len(closing)


def test_deadline_closing_is_bounded(completer, monkeypatch):
    src, cursor, _ = _real_holes()[0]
    monkeypatch.setattr(completer, "close_steps", 2)
    completer.complete(src, cursor, deadline=time.monotonic())
    assert completer.last["closing_from"] == 0 and completer.last["steps"] == 2
    monkeypatch.setattr(completer, "overshoot", 0.0)      # no time to close: nothing, at once
    t = time.monotonic()
    assert completer.complete(src, cursor, deadline=t) == []
    assert time.monotonic() - t < 0.5


def test_cancellation_while_closing(completer, monkeypatch):
    monkeypatch.setattr(completer, "overshoot", 1.0)
    src, cursor, _ = _real_holes()[0]
    assert completer.complete(src, cursor, deadline=time.monotonic())
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 4       # the request's first check, prepare's, then two closing steps
    with pytest.raises(Cancelled):
        completer.complete(src, cursor, deadline=time.monotonic(), cancelled=cancelled)
    assert len(calls) == 5 and "candidates" not in completer.last


def test_generous_deadline_changes_nothing(completer):
    for src, cursor, _ in _real_holes():
        free = completer.complete(src, cursor)
        steps = completer.last["steps"]
        timed = completer.complete(src, cursor, deadline=time.monotonic() + 60)
        assert "stopped" not in completer.last and completer.last["steps"] == steps
        assert [c.text for c in timed] == [c.text for c in free]
        assert [c.logprob for c in timed] == pytest.approx([c.logprob for c in free], abs=1e-4)


def test_bad_input(completer):
    assert completer.complete(b"", 0) == []
    with pytest.raises(ValueError):
        completer.complete(b"x = 1\n", 7)
    with pytest.raises(ValueError):
        completer.complete(b"x = 1\n", -1)
    with pytest.raises(TypeError):
        completer.complete("x = ", 4)
    completer.complete(b"\xff\xfe\x00garbage = \x00", 11)          # not UTF-8, NULs: no exception


def test_ten_megabyte_buffer_in_bounded_time(completer):
    body = (DATA / "string.py").read_bytes()
    big = body * (10_000_000 // len(body) + 1)
    hole = b"def probe(values, limit):\n    total = sum(values)\n    return "
    mid = len(big) // 2
    mid = big.index(b"\ndef ", mid) + 1
    src = big[:mid] + hole + b"\n\n" + big[mid:]
    cursor = mid + len(hole)
    t = time.perf_counter()
    items = completer.complete(src, cursor)
    assert time.perf_counter() - t < 10
    assert "steps" in completer.last            # a window around the cursor was parsed and decoded
    for c in items:
        assert c.start == cursor


def test_caches_are_used(completer):
    src, cursor, _ = holes_of(DATA / "reprlib.py", 1, seed=3)[0]
    uri = "file:///cache-test.py"
    completer.close_document(uri)
    first = completer.complete(src, cursor, uri=uri, version=1)
    assert completer.last["context_hit"] is False
    again = completer.complete(src, cursor, uri=uri, version=1)
    assert completer.last["context_hit"] is True and completer.last["incremental"] is True
    assert again == first
    # typing elsewhere in the file: incremental parse; the leaves' upward states are reused
    edited = b"# edited\n" + src
    hits = completer.leaf_cache.hits
    completer.complete(edited, cursor + 9, uri=uri, version=2)
    assert completer.last["incremental"] is True
    assert completer.leaf_cache.hits > hits or completer.last["context_hit"]


def test_model_errors(model_dir, tmp_path):
    with pytest.raises(ModelError, match="no model"):
        Completer(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    data = bytearray((broken / "score.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / "score.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        Completer(broken)
    (broken / "lstm_node.onnx").unlink()
    with pytest.raises(ModelError, match="missing"):
        Completer(broken)


def test_threads_automatic_and_a_number_is_kept(model_dir, monkeypatch):
    """`threads` 0 (the settings' default) on the CPU: the LSTM graphs on one ONNX Runtime thread,
    the score graph on two where there are two cores (on one core, one), because every graph on two
    made completions 1.7x slower and the score graph alone on two 0.9x as long (docs/bench.md,
    "Forced steps, and the score graph on two threads").  A number given is every graph's."""
    def intra(backend):
        return {g: s.get_session_options().intra_op_num_threads for g, s in backend.sessions.items()}
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    auto = intra(Completer(model_dir, device="cpu", threads=0, verify_files=False).backend)
    assert auto.pop("score") == 2 and set(auto.values()) == {1}
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert set(intra(Completer(model_dir, device="cpu", threads=0, verify_files=False).backend).values()) == {1}
    two = Completer(model_dir, device="cpu", threads=2, verify_files=False).backend
    assert two.threads == 2 and set(intra(two).values()) == {2}


def test_steps_the_grammar_forces_ask_the_network_nothing_and_change_nothing(model_dir, monkeypatch):
    """A beam whose next node the grammar allows alone (the "." of an attribute, the EOS-node of a
    full call) is not sent to the network: the same candidates, with fewer score rows.  Float
    graphs, so that which rows share a call does not move the int8 quantization."""
    pytest.importorskip("onnx")
    c = Completer(model_dir, device="cpu", threads=1, float_graphs=True)
    if c.manifest.get("untrained"):
        pytest.skip("random weights do not give forced steps probability 1")
    rows = []
    real = c.backend.score
    monkeypatch.setattr(c.backend, "score", lambda paths, *a, **k: rows.append(len(paths)) or real(paths, *a, **k))
    holes = [h for path in sorted(DATA.glob("*.py")) for h in holes_of(path, 2)]

    def run():
        rows.clear()
        got = [[(x.text, x.logprob) for x in c.complete(src, cursor)] for src, cursor, _ in holes]
        return got, sum(rows)
    skipping, asked_skipping = run()
    monkeypatch.setattr(c.decoder, "only_label", lambda ctx, hy: None)
    asking, asked_all = run()
    assert [[t for t, _ in r] for r in skipping] == [[t for t, _ in r] for r in asking]
    assert all(abs(a - b) < 1e-4 for r, s in zip(skipping, asking) for (_, a), (_, b) in zip(r, s))
    assert asked_skipping < asked_all


def test_a_prior_tree_makes_the_first_parse_incremental_and_changes_nothing(completer):
    """The server hands over its own tree of the buffer (`prior`): the hole's parse of a document
    seen for the first time starts from it, with the same candidates as a parse from scratch."""
    path = DATA / "reprlib.py"
    for k, (src, cursor, _) in enumerate(holes_of(path, 3)):
        cold = completer.complete(src, cursor, uri=f"file:///cold{k}.py")
        assert completer.last["incremental"] is False
        tree = grammar.new_parser().parse(src)
        warm = completer.complete(src, cursor, uri=f"file:///warm{k}.py", prior=(src, tree))
        assert completer.last["incremental"] is True
        assert [(c.text, c.start, c.end) for c in warm] == [(c.text, c.start, c.end) for c in cold]


def test_typing_along_reuses_the_network_outputs_of_the_same_context(model_dir, monkeypatch):
    """Typing the target's first characters one request at a time: the context stays, most
    hypotheses come back, and their network outputs come from the memo.  The same candidates as
    without it (float graphs, so that which rows share a call does not move the int8 quantization),
    with fewer score rows."""
    pytest.importorskip("onnx")
    c = Completer(model_dir, device="cpu", threads=1, float_graphs=True)
    rows = []
    real = c.backend.score
    monkeypatch.setattr(c.backend, "score", lambda paths, *a, **k: rows.append(len(paths)) or real(paths, *a, **k))
    sequences = []
    for path in sorted(DATA.glob("*.py")):
        for src, cursor, target in holes_of(path, 1):
            sequences.append([(src[:cursor] + target[:j].encode() + src[cursor:], cursor + j)
                              for j in range(min(3, len(target)) + 1)])

    def run(memo):
        c.score_memo = memo
        rows.clear()
        got = []
        for k, seq in enumerate(sequences):
            for v, (buf, cur) in enumerate(seq):
                got.append([(x.text, round(x.logprob, 4)) for x in c.complete(buf, cur, uri=f"file:///t{k}.py",
                                                                              version=v + 1)])
        return got, sum(rows)
    without, asked_without = run(None)
    memo = ScoreMemo()
    with_memo, asked_with = run(memo)
    assert [[t for t, _ in r] for r in with_memo] == [[t for t, _ in r] for r in without]
    assert all(abs(a - b) < 1e-3 for r, s in zip(with_memo, without) for (_, a), (_, b) in zip(r, s))
    assert memo.hits > 0 and asked_with < asked_without


def test_a_cuda_provider_that_does_not_start_leaves_the_cpu_sessions(model_dir, monkeypatch):
    """onnxruntime-gpu on a machine without a usable GPU: ONNX Runtime lists the CUDA provider but
    its sessions fall back to the CPU.  The backend then runs the graphs as made for the CPU (int8
    as shipped, not the float graphs meant for the GPU) and says why."""
    import onnxruntime as ort
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    backend = Completer(model_dir, device="auto", verify_files=False).backend
    assert backend.device == "cpu" and not backend.float_graphs and not backend.runners
    assert "no usable GPU" in backend.note
    with pytest.raises(ModelError, match="fell back"):
        Completer(model_dir, device="cuda", verify_files=False)


def test_demo_and_no_torch_on_the_serving_path(model_dir):
    """`anycode complete` on examples/demo.py, in a fresh process that must not import torch."""
    code = ("import sys; from anycode.model import cli_complete as m; import argparse; ap = argparse.ArgumentParser();"
            "m.add_parser(ap); rc = m.run(ap.parse_args(sys.argv[1:]));"
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "examples/demo.py:4:11", "--model", str(model_dir),
                        "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "examples/demo.py:4:11" in r.stdout


@pytest.mark.parametrize("src, good, bad", [
    (b"def f(path):\n    with |:\n        pass\n", "open(path)", "open(path) g"),
    (b"def f(path):\n    with |, lock:\n        pass\n", "open(path)", "x = 1"),
    (b"def f(a):\n    return |\n", "a.b(1)", "a b"),
])
def test_verify_accepts_the_expression_under_wrappers_of_its_span(src, good, bad):
    """In `with fn():` the call, its with_item and its with_clause span the same bytes: the call
    is the hole's node, whatever wraps it."""
    cursor = src.index(b"|")
    src = src[:cursor] + src[cursor + 1:]
    parser = grammar.new_parser()
    hole = holes.find_hole(src, cursor, lang=grammar.PYTHON, parser=parser)
    assert hole is not None
    assert hole.verify(good, grammar.parse_expression(good), parser)
    assert hole.verify(good, None, parser)
    assert not hole.verify(good, grammar.parse_expression("g(path, 1)"), parser)   # another shape
    assert not hole.verify(bad, None, parser)


def test_buffer_identifier_counts_follow_edits_inside_and_outside_the_function():
    """The file tokens' counts of a document (holes.IdentifierCounts, kept between requests) equal a
    fresh count of the whole buffer after edits outside the function and inside it."""
    from anycode.model.features import outside_identifiers
    from anycode.model.holes import IdentifierCounts, find_hole
    counts = IdentifierCounts()
    src = b"import os\nLIMIT_A = 1\n\n\ndef f(items):\n    total = len(items)\n    return \n\n\nLIMIT_A += 2\n"
    cursor = src.index(b"return ") + len(b"return ")

    def check(buf, cur, present, absent):
        hole = find_hole(buf, cur, lang=grammar.PYTHON, identifiers=counts)
        fresh = grammar.identifier_counts(grammar.parse(hole.ph_source).root_node)
        assert hole.tree.file_identifiers == fresh
        names = outside_identifiers(hole.tree, 256)
        assert present in names and absent not in names, names
        return hole

    check(src, cursor, "LIMIT_A", "items")           # the function's own names are not file tokens
    edited = src.replace(b"LIMIT_A", b"LIMIT_B")      # outside the function: counted again
    check(edited, cursor, "LIMIT_B", "LIMIT_A")
    typed = edited[:cursor] + b"total + " + edited[cursor:]   # inside: the outside counts are reused
    key = counts.key
    check(typed, cursor + len(b"total + "), "LIMIT_B", "total")
    assert counts.key == key


def test_verify_in_the_top_level_statement_agrees_with_the_whole_buffer():
    """Hole.verify re-parses only the top-level statement around the hole: on real holes and on
    candidates that fit, do not parse, or parse as another tree, it says what a re-parse of the
    whole buffer says."""
    from dataclasses import replace

    from anycode.model.holes import find_hole
    parser = grammar.new_parser()
    checked = disagree = accepted = 0
    for f in sorted(DATA.glob("*.py")):
        source = f.read_bytes()
        for flat, hs, _ in dataset.extract_file(str(f), name=f.name, lang=grammar.PYTHON).functions[:6]:
            for h in hs[:3]:
                a, b = flat.start_byte[h], flat.end_byte[h]
                truth = source[a:b].decode()
                cut = source[:a] + source[b:]
                hole = find_hole(cut, a, lang=grammar.PYTHON, parser=parser)
                if hole is None:
                    continue
                assert hole.window is not None and hole.window[1] - hole.window[0] < len(hole.ph_source)
                whole = replace(hole, window=None, _window_tree=None)
                for text in (truth, truth + " )", "(" + truth, "x", "[" + truth + "]", "lambda: " + truth, "1 +"):
                    node = grammar.parse_expression(text)
                    got = hole.verify(text, node, parser)
                    disagree += got != whole.verify(text, node, parser)
                    accepted += got
                    checked += 1
    assert checked > 100 and accepted > 20 and disagree == 0, (checked, accepted, disagree)
