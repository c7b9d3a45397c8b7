"""The fill-in-the-middle baseline (issue 21): tokenizer, sequences, training and resuming, and
candidates for a real hole judged by `anycode eval`'s code.  Real stdlib files laid out as the
corpus is (tests/slm_fixtures.py's modules), a tiny model on the CPU."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from anycode.model import evaluate as E  # noqa: E402
from anycode.model import fim_data as D  # noqa: E402
from anycode.model import fim_eval as V  # noqa: E402
from anycode.model import fim_tokenizer as T  # noqa: E402
from anycode.model import fim_train  # noqa: E402
import test_baseline_serving as S  # noqa: E402 - the serving checks, shared
from anycode.model.baseline_runtime import BaselineCompleter  # noqa: E402
from slm_fixtures import DEV_MODULES, TEST_MODULES, TRAIN_MODULES, module_file, tiny_dataset  # noqa: E402

TRICKY = 'x = "<eot>" + \'<fim_middle>\'\r\n\tif a:\n        return "é ✓ 😀"  \n\n\n    \t# ok\n'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus folder as `anycode corpus fetch` lays it out: SPLIT/PROJECT/FILE and manifest.json."""
    root = tmp_path_factory.mktemp("corpus")
    projects = {}
    for split, names in (("train", TRAIN_MODULES), ("dev", DEV_MODULES), ("test", TEST_MODULES)):
        projects[f"stdlib-{split}"] = {"split": split}
        (root / split / f"stdlib-{split}").mkdir(parents=True)
        for n in names:
            shutil.copy(module_file(n), root / split / f"stdlib-{split}" / f"{n}.py")
            if split == "test":      # where the test shards' examples name their file (slm_fixtures)
                shutil.copy(module_file(n), root / split / f"{n}.py")
    (root / "manifest.json").write_text(json.dumps({"projects": projects}))
    return root


@pytest.fixture(scope="module")
def packed(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fim")
    tok = T.train_tokenizer(T.corpus_texts(corpus, "train"), vocab_size=600)
    tok.save(str(out / "tokenizer.json"))
    for split in ("train", "dev"):
        D.pack_split(corpus, split, out)
    return out


@pytest.fixture(scope="module")
def tok(packed):
    return T.load(packed / "tokenizer.json")


def test_tokenizer_round_trips_code_exactly(tok, corpus):
    for path in sorted((corpus / "dev").rglob("*.py")):
        text = path.read_text(encoding="utf8")
        assert T.decode(tok, T.encode(tok, text)) == text
    ids = T.encode(tok, TRICKY)
    assert T.decode(tok, ids) == TRICKY
    assert not set(ids) & set(range(len(T.SPECIALS))), "a sentinel's spelling in code is text, not the sentinel"
    assert [tok.token_to_id(s) for s in T.SPECIALS] == [T.PAD, T.PREFIX, T.SUFFIX, T.MIDDLE, T.EOT]


def test_fim_formats_and_fit():
    p, s, m = [10, 11, 12], [20, 21], [30, T.EOT]
    assert D.fim_sequence(p, s, m, spm=False) == [T.PREFIX, 10, 11, 12, T.SUFFIX, 20, 21, T.MIDDLE, 30, T.EOT]
    assert D.fim_sequence(p, s, m, spm=True) == [T.PREFIX, T.SUFFIX, 20, 21, T.MIDDLE, 10, 11, 12, 30, T.EOT]
    assert D.fit(list(range(10)), list(range(100, 110)), 6) == ([7, 8, 9], [100, 101, 102])
    # what one side leaves goes to the other
    assert D.fit([1], list(range(100, 110)), 6) == ([1], [100, 101, 102, 103, 104])
    assert D.fit(list(range(10)), [100], 6) == ([5, 6, 7, 8, 9], [100])


def _parts(row: list[int]) -> tuple[bool, list[int], list[int], list[int]]:
    """(spm, prefix, suffix, middle) of a FIM sequence."""
    if row[1] == T.SUFFIX:
        k = row.index(T.MIDDLE)
        return True, None, row[2:k], row[k + 1:]     # the prefix runs into the middle: split below
    i, k = row.index(T.SUFFIX), row.index(T.MIDDLE)
    return False, row[1:i], row[i + 1:k], row[k + 1:]


def test_a_prefix_ending_in_one_space_is_healed(tok):
    from types import SimpleNamespace
    from anycode.model import fim_search as FS
    assert FS.heal("    return ") == ("    return", True)
    assert FS.heal("x = f(a, ") == ("x = f(a,", True)
    for kept in ("x = f(", "    return  ", "if x:\n    ", ""):
        assert FS.heal(kept) == (kept, False)
    vocab = tok.get_vocab_size()
    word = next(w for w in (T.decode(tok, [i]) for i in range(len(T.SPECIALS), vocab))
                if w.startswith(" ") and w[1:].isidentifier() and len(T.encode(tok, w[1:])) == 1)[1:]
    glued, spaced = T.encode(tok, word)[0], T.encode(tok, " " + word)[0]
    prompts = []

    def step(tokens, parents):            # the first token: the word glued (likely) or spaced; then the end
        lp = np.full((len(tokens), vocab), -20.0)
        if parents is None:
            prompts.append(tokens[0].tolist())
            lp[0, glued], lp[0, spaced] = -0.1, -3.0
        else:
            lp[:, T.EOT] = -0.1
        return lp

    banned = T.middle_banned(tok, vocab)
    healed = FS.search(step, tok, SimpleNamespace(prefix="    return ", suffix="\n"), 2, banned, 64)
    p = prompts[-1]                        # PSM: <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
    assert T.decode(tok, p[1: p.index(T.SUFFIX)]) == "    return", "the prompt ends before the space"
    assert healed["plain"][0] == (word, pytest.approx(-3.1)), "the middle starts with the space: the glued word is not taken"
    kept = FS.search(step, tok, SimpleNamespace(prefix="f(", suffix=")\n"), 2, banned, 64)
    assert kept["plain"][0] == (word, pytest.approx(-0.2)), "no space to heal: the likelier glued word"


def test_sequences_are_the_corpus_text_in_psm_and_spm(packed, tok, corpus):
    settings = D.FimSettings(block=256, fim_rate=1.0, spm_rate=0.5, max_middle=64)
    ex = D.FimExamples(packed, "train", tok, settings, seed=3)
    text = "".join(p.read_text(encoding="utf8") for p in sorted((corpus / "train").rglob("*.py")))
    seen = set()
    for k in range(40):
        row = [int(x) for x in ex[k] if x != T.PAD]
        assert row[0] == T.PREFIX and row[-1] == T.EOT and len(ex[k]) == settings.block + 1
        spm, p, s, m = _parts(row[:-1])
        seen.add(spm)
        if spm:     # the middle follows the prefix without a sentinel: the whole is prefix + middle
            assert T.decode(tok, m) + T.decode(tok, s) in text
        else:
            assert T.decode(tok, p) + T.decode(tok, m) + T.decode(tok, s) in text
            assert len(T.decode(tok, m).encode()) <= settings.max_middle
    assert seen == {False, True}
    assert np.array_equal(D.FimExamples(packed, "train", tok, settings, seed=3)[7], ex[7]), "example k is fixed"
    plain = D.FimExamples(packed, "train", tok, D.FimSettings(block=64, fim_rate=0.0), seed=3)[0]
    assert T.PREFIX not in plain.tolist() and T.decode(tok, plain.tolist()) in text


def test_pieces_round_trip(packed, tmp_path):
    pieces = D.write_pieces(packed, "dev", tmp_path / "pieces")
    assert pieces and all(p.stat().st_size < 16 * 2**20 for p in pieces)
    pieces[-1].rename(tmp_path / "away")
    assert D.unpack_ready(tmp_path / "pieces", tmp_path / "back") == []        # not all there yet
    (tmp_path / "away").rename(pieces[-1])
    assert D.unpack_ready(tmp_path / "pieces", tmp_path / "back") == ["dev"]
    for name in ("dev.bin.npy", "dev.idx.npy"):
        assert (tmp_path / "back" / name).read_bytes() == (packed / name).read_bytes()


def _train_args(packed, out, steps) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    fim_train.add_parser(ap)
    args = ap.parse_args(["--data", str(packed), "--out", str(out), "--config", "tiny", "--minutes", "5",
                          "--steps", str(steps), "--device", "cpu", "--set", "lr=0.01"])
    args.overrides = fim_train.parse_overrides(args.overrides, fim_train.make_settings("tiny", {}))
    return args


@pytest.fixture(scope="module")
def run_dir(packed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    fim_train.train(_train_args(packed, out, 40))
    return out


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_model_trains_and_resumes_at_its_step(run_dir, packed):
    losses = [r["loss"] for r in _log(run_dir) if "loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    st = fim_train.train(_train_args(packed, run_dir, 50))
    starts = [r["start_step"] for r in _log(run_dir) if "start_step" in r]
    assert starts == [0, 40] and st["step"] == 50
    resumed = [r["loss"] for r in _log(run_dir) if "loss" in r][40:]
    assert len(resumed) == 10 and np.mean(resumed) < np.mean(losses[:5]) - 0.5
    assert (run_dir / "best.pt").exists() and (run_dir / "tokenizer.json").exists()


def test_a_new_run_goes_on_from_the_weights_a_device_call_brought_back(run_dir, packed, tmp_path):
    from anycode.model.checkpoint import baseline_state
    config, state = baseline_state(run_dir)
    back = tmp_path / "back"                  # what weights.py --join writes: fp16 slm.pt, config.json
    back.mkdir()
    torch.save({k: v.half() for k, v in state.items()}, back / "slm.pt")
    (back / "config.json").write_text(json.dumps({"model": config}))
    first = [r["loss"] for r in _log(run_dir) if "loss" in r]
    args = _train_args(packed, tmp_path / "on", 5)
    args.init = back
    st = fim_train.train(args)
    assert st["step"] == 5 and st["init"] == str(back)
    went_on = [r["loss"] for r in _log(tmp_path / "on") if "loss" in r]
    assert np.mean(went_on) < np.mean(first[:5]) - 0.5, "it starts where the first run was, not from scratch"
    wide = _train_args(packed, tmp_path / "wide", 5)
    wide.init, wide.overrides = back, {**wide.overrides, "d": 64}
    with pytest.raises(SystemExit, match="another shape"):
        fim_train.train(wide)


def test_candidates_for_real_holes_judged_by_eval(run_dir, corpus, tmp_path):
    data = tiny_dataset(tmp_path / "data")
    holes, found = V.eval_holes(data, corpus, "test", 4)
    assert found == 4
    refs = E.sample_refs(data, "test", 4)
    assert [(h.tree.types, h.h) for h in holes] == [(t.types, k) for t, k in (s.example(i) for s, i in refs)]
    hole = holes[0]
    truth = hole.source[hole.start: hole.end].decode()
    assert E.same_code(truth, E.truth_code(hole.tree, hole.h))
    assert V.judge(hole, [("nothing_like_it", -1.0), (truth, -2.0)]).acc == 1      # eval's scoring
    model, tok = V.load_run(run_dir)
    banned = T.middle_banned(tok, model.cfg.vocab)
    plain = V.candidates(model, tok, hole, 3, banned)["plain"]
    assert plain and all(isinstance(t, str) and t for t, _ in plain)
    assert [lp for _, lp in plain] == sorted((lp for _, lp in plain), reverse=True)
    check = V.hole_check(hole, hole.tree.lang, hole.tree.lang.new_parser())
    assert check(truth) and not check(truth + " )")
    both = V.candidates(model, tok, hole, 3, banned, check)
    assert both["plain"] == plain, "one search, the same plain list"
    assert all(check(t) for t, _ in both["grammar"])
    assert [x for x in plain if check(x[0])] == both["grammar"][: len([x for x in plain if check(x[0])])]
    res = V.evaluate(model, tok, holes[:2], beam=3)
    assert set(res) == {"plain", "grammar"} and res["plain"]["n"] == 2
    assert res["grammar"]["top1_parses_in_hole"] in (0.0, 50.0, 100.0)
    block = V.report([("tiny", res)], None, "header")
    assert "| tiny, plain beam |" in block and "| tiny, grammar beam |" in block


# ---------------------------------------------------------------- through the server (ONNX Runtime)


@pytest.fixture(scope="module")
def test_holes(corpus, tmp_path_factory) -> list:
    holes, found = V.eval_holes(tiny_dataset(tmp_path_factory.mktemp("data")), corpus, "test", 8)
    assert found == 8
    return holes


@pytest.fixture(scope="module")
def served_run(packed, tmp_path_factory) -> Path:
    """A run of its own (run_dir grows as the tests above resume it): 80 steps, enough for answers that
    parse in most test holes."""
    out = tmp_path_factory.mktemp("served-run")
    fim_train.train(_train_args(packed, out, 80))
    return out


@pytest.fixture(scope="module")
def exported(served_run, tmp_path_factory) -> Path:
    return S.export_run("fim", served_run, tmp_path_factory.mktemp("fim-onnx"))


def _fim_search(run: Path, spm: bool = False):
    model, tok = V.load_run(run)
    banned = T.middle_banned(tok, model.cfg.vocab)
    return lambda hole, check: V.candidates(model, tok, hole, S.BEAM, banned, check, spm)


def test_onnx_runtime_gives_the_torch_evaluations_candidates(served_run, exported, test_holes):
    S.assert_graphs_give(_fim_search(served_run), BaselineCompleter("fim", exported, "cpu"), test_holes)


def test_a_model_exported_in_spm_order_is_asked_in_spm_order(served_run, test_holes, tmp_path):
    spm = S.export_run("fim", served_run, tmp_path / "spm", "--spm")
    completer = BaselineCompleter("fim", spm, "cpu")
    S.assert_graphs_give(_fim_search(served_run, spm=True), completer, test_holes)
    psm = _fim_search(served_run)(test_holes[0], None)["plain"]
    assert completer.graphs.search(test_holes[0], S.BEAM, None, None)["plain"] != psm, "the order changes the answers"


def test_the_server_path_answers_the_evaluations_grammar_list(served_run, exported, test_holes):
    S.assert_server_path_answers(_fim_search(served_run), BaselineCompleter("fim", exported, "cpu"), test_holes)


@pytest.mark.asyncio(loop_scope="module")
async def test_anycode_serve_model_fim_answers_through_lsp(exported, test_holes):
    await S.assert_lsp_answers("fim", exported, test_holes)
