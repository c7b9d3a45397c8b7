"""The baselines of issue 21 through the server: a tiny seq2seq model trained here on real stdlib
files, exported to ONNX (`anycode s2s export`), gives the torch evaluation's candidates on ONNX
Runtime; the server's path (the hole found in the buffer, the time budget, cancellation) answers
them; `anycode serve --model s2s` answers whole expressions that parse in their hole through a real
LSP client; a bad setting warns and the SLM serves."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lsprotocol import types

torch = pytest.importorskip("torch")

from anycode.model import fim_eval as V  # noqa: E402
from anycode.model import fim_train  # noqa: E402
from anycode.model import runtime  # noqa: E402
from anycode.model import s2s_data as D  # noqa: E402
from anycode.model import s2s_eval as SE  # noqa: E402
from anycode.model.baseline_runtime import BaselineCompleter  # noqa: E402
from anycode.model.s2s_train import S2STask  # noqa: E402
from conftest import Doc, start_server, stats, stop_server, wait_status  # noqa: E402
from slm_fixtures import s2s_train_args, tiny_corpus, tiny_dataset  # noqa: E402

BEAM = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list]:
    """A tiny seq2seq run trained on the stdlib files, and the test split's first 8 located holes."""
    root = tmp_path_factory.mktemp("s2s-serving")
    data, corpus = tiny_dataset(root / "data"), tiny_corpus(root / "corpus")
    D.pack(data, corpus, root / "packed", ["train", "dev"], size=400, jobs=1, pieces=None)
    torch.manual_seed(0)
    fim_train.train(s2s_train_args(root / "packed", root / "run", 60), S2STask(root / "packed"))
    holes, found = V.eval_holes(data, corpus, "test", 8)
    assert found == 8
    return root / "run", holes


def export_run(kind: str, run: Path, out: Path, *extra: str) -> Path:
    """`anycode KIND export` of a run into `out`, fp32 (the graphs' arithmetic is the model's)."""
    done = subprocess.run([sys.executable, "-m", "anycode", kind, "export", "--model", str(run), "--out", str(out),
                           "--precision", "fp32", *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"exported the {kind} model" in done.stdout
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    return export_run("s2s", trained[0], tmp_path_factory.mktemp("s2s-onnx"))


def assert_graphs_give(torch_search, completer: BaselineCompleter, holes: list) -> None:
    """The exported graphs' search (ONNX Runtime) gives `torch_search(hole, check)`'s lists: the same
    texts, the same scores; most holes have an answer that parses in them."""
    answered = 0
    for hole in holes:
        lang = hole.tree.lang
        check = V.hole_check(hole, lang, lang.new_parser())
        want = torch_search(hole, check)
        got = completer.graphs.search(hole, BEAM, check, None)
        for name in ("plain", "grammar"):
            assert [t for t, _ in got[name]] == [t for t, _ in want[name]], (name, got[name], want[name])
            assert np.allclose([lp for _, lp in got[name]], [lp for _, lp in want[name]], atol=1e-4)
        answered += bool(want["grammar"])
    assert answered >= len(holes) // 2, f"{answered} of {len(holes)} holes answered"


def _buffer(hole) -> tuple[bytes, int]:
    """The hole's file with its expression cut out, the cursor where it was (holebench's request)."""
    return hole.source[: hole.start] + hole.source[hole.end:], hole.start


def assert_server_path_answers(torch_search, completer: BaselineCompleter, holes: list) -> None:
    """At the cursor where an expression was cut, the completer answers the evaluation's grammar list
    for that hole: the same buffers, the same scores.  (Where the cut leaves a typed start, `f(a, |)`,
    the server's hole is the call, and its answers come from the operand's hole: the call, written
    whole over the typed text.)"""
    for hole in holes:
        source, cursor = _buffer(hole)
        lang = hole.tree.lang
        want = torch_search(hole, V.hole_check(hole, lang, lang.new_parser()))["grammar"]
        got = completer.complete(source, cursor, beam_size=BEAM, max_items=BEAM)
        assert [source[: c.start] + c.text.encode() + source[c.end:] for c in got] == \
            [hole.source[: hole.start] + t.encode() + hole.source[hole.end:] for t, _ in want]
        assert np.allclose([c.logprob for c in got], [lp for _, lp in want], atol=1e-4)


def _s2s_search(run: Path):
    model, vocab = SE.load_run(run)
    return lambda hole, check: SE.candidates(model, vocab, hole, BEAM, check)


def test_onnx_runtime_gives_the_torch_evaluations_candidates(trained, exported):
    assert_graphs_give(_s2s_search(trained[0]), BaselineCompleter("s2s", exported, "cpu"), trained[1])


def test_the_server_path_answers_the_evaluations_grammar_list(trained, exported):
    assert_server_path_answers(_s2s_search(trained[0]), BaselineCompleter("s2s", exported, "cpu"), trained[1])


def test_time_budget_and_cancellation(trained, exported):
    completer = BaselineCompleter("s2s", exported, "cpu")
    source, cursor = _buffer(trained[1][0])
    calls = []
    full = completer.complete(source, cursor, beam_size=BEAM, cancelled=lambda: calls.append(1) and False)
    assert full and len(calls) >= 3, "checked before the search and between its steps"
    assert completer.complete(source, cursor, beam_size=BEAM, deadline=time.monotonic()) == []
    assert completer.stats["deadline"] == 1
    with pytest.raises(runtime.Cancelled):
        completer.complete(source, cursor, beam_size=BEAM, cancelled=lambda: len(calls) > 1)
    calls.clear()
    with pytest.raises(runtime.Cancelled):       # past the first step
        completer.complete(source, cursor, beam_size=BEAM, cancelled=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3


def test_model_directories_that_do_not_fit_say_how_to_fix_it(exported, model_settings, tmp_path):
    with pytest.raises(runtime.ModelError, match="anycode s2s export --model RUN --out DIR"):
        BaselineCompleter("s2s", "", "cpu")
    with pytest.raises(runtime.ModelError, match="no manifest.json.*anycode s2s export"):
        BaselineCompleter("s2s", tmp_path, "cpu")
    with pytest.raises(runtime.ModelError, match="holds the s2s model, not the fim model"):
        BaselineCompleter("fim", exported, "cpu")
    with pytest.raises(runtime.ModelError, match="anycode.model = s2s"):
        runtime.Completer(exported, "cpu")
    slm_dir = model_settings.get("modelPath") or runtime.SHIPPED
    with pytest.raises(runtime.ModelError, match="holds the slm model, not the s2s model"):
        BaselineCompleter("s2s", slm_dir, "cpu")


async def assert_lsp_answers(kind: str, model_dir: Path, holes: list) -> None:
    """`anycode serve --model KIND --model-path DIR` answers completion and inline completion at two
    holes as the completer does in process (the time budget ample), each answer parsing in its hole;
    torch never loads."""
    completer = BaselineCompleter(kind, model_dir, "cpu")
    cases = [(h, completer.complete(*_buffer(h), beam_size=BEAM, max_items=BEAM)) for h in holes]
    cases = [(h, c) for h, c in cases if c][:2]
    assert cases
    client = await start_server({"anycode": {"timeBudgetMs": 60000, "beamSize": BEAM, "maxItems": BEAM,
                                             "device": "cpu"}},
                                args=("--model", kind, "--model-path", str(model_dir)))
    try:
        assert client.statuses[-1].state == "ready", client.statuses
        for k, (hole, want) in enumerate(cases):
            source, cursor = _buffer(hole)
            doc = Doc(client, f"file:///tmp/{kind}_{k}.py", source.decode())
            index = len(source[:cursor].decode())
            items = (await doc.complete(index)).items
            assert [it.text_edit.new_text for it in items] == [c.text for c in want]
            inline = (await doc.inline(index)).items
            assert [it.insert_text for it in inline] == [c.text for c in want]
            check = V.hole_check(hole, hole.tree.lang, hole.tree.lang.new_parser())
            for it, c in zip(items, want):
                filled = doc.apply(it.text_edit.range, it.text_edit.new_text).encode()
                assert filled == source[: c.start] + c.text.encode() + source[c.end:]
                if c.start == cursor:     # the expression's own hole (not the call around it)
                    assert check(it.text_edit.new_text), it.text_edit.new_text
        st = await stats(client)
        assert st.settings.model == kind and not st.torchLoaded
    finally:
        await stop_server(client)


@pytest.mark.asyncio(loop_scope="module")
async def test_anycode_serve_model_s2s_answers_through_lsp(trained, exported):
    await assert_lsp_answers("s2s", exported, trained[1])


@pytest.mark.asyncio(loop_scope="module")
async def test_a_bad_model_setting_warns_and_the_slm_serves(model_settings):
    client = await start_server({"anycode": {"model": "gpt", **model_settings}})
    try:
        warned = [m.message for m in client.messages if m.type == types.MessageType.Warning]
        assert any("anycode.model" in w and "'gpt'" in w and "slm, s2s, fim" in w for w in warned), warned
        st = await stats(client)
        assert st.settings.model == "slm" and st.state == "ready"
        text = "def area(width, height):\n    return \n"
        doc = Doc(client, "file:///tmp/slm_serves.py", text)
        items = (await doc.complete(text.index("return ") + len("return "))).items
        assert items, "the SLM answers"
    finally:
        await stop_server(client)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_baseline_without_its_directory_is_an_error_to_the_client():
    client = await start_server({"anycode": {"model": "s2s"}})
    try:
        st = await wait_status(client, ("error",))
        assert "anycode s2s export" in st.message
        errors = [m.message for m in client.messages if m.type == types.MessageType.Error]
        assert any("anycode s2s export" in e for e in errors), errors
    finally:
        await stop_server(client)
