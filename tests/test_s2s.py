"""The seq2seq + copy baseline (issue 21): holes as pieces, packing, a tiny model that trains and
resumes at its step, the pointer copying a piece outside the vocabulary, and candidates for real
holes judged by `anycode eval`'s code.  Real stdlib files through the dataset pipeline
(tests/slm_fixtures.py), a tiny model on the CPU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anycode import grammars  # noqa: E402
from anycode.model import evaluate as E  # noqa: E402
from anycode.model import fim_data  # noqa: E402
from anycode.model import fim_eval as V  # noqa: E402
from anycode.model import fim_train  # noqa: E402
from anycode.model import s2s_data as D  # noqa: E402
from anycode.model import s2s_eval as SE  # noqa: E402
from anycode.model import s2s_search as S2S_SEARCH  # noqa: E402
from anycode.model.s2s import S2SConfig, S2SModel  # noqa: E402
from anycode.model.s2s_train import S2STask  # noqa: E402
from slm_fixtures import s2s_train_args, tiny_corpus, tiny_dataset  # noqa: E402

LANG = grammars.get(grammars.DEFAULT)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def packed(data, corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s2s")
    D.pack(data, corpus, out, ["train", "dev"], size=400, jobs=1, pieces=None)
    return out


def test_code_pieces_and_back():
    code = "def f(self):\n    return self._max_value + getHTTPServer('a b', 1.5e-3)  \n"
    pieces, first, spans = D.code_pieces(LANG, code)
    assert "<j>" in pieces and "'a b'" in pieces and "1.5e-3" in pieces
    start = code.index("self._max")
    end = code.index(")  \n") + 1
    a, b = D.hole_pieces(first, spans, len(pieces), start, end)
    assert E.same_code(D.pieces_text(LANG, pieces[a:b]), code[start:end])
    assert D.hole_pieces(first, spans, len(pieces), start + 1, end) is None, "not on a token boundary"


def test_pack_keeps_the_holes_and_their_text(packed, data):
    summary = json.loads((packed / "summary.json").read_text())
    shards = [len(s) for s in (D.Shard(p) for p in D.shard_paths(data, "train"))]
    assert summary["train"]["examples"] >= 0.97 * sum(shards), summary
    vocab = json.loads((packed / "vocab.json").read_text())
    assert len(vocab) == 400 and vocab[: len(D.SPECIALS)] == D.SPECIALS
    ex = D.S2SExamples(packed, "train", len(vocab), 256, 63, seed=0)
    src, tgt = ex[3]
    assert (src == D.HOLE).sum() == 1 and len(tgt) and D.HOLE not in tgt
    assert np.array_equal(D.S2SExamples(packed, "train", len(vocab), 256, 63, seed=0)[3][0], src), "example k is fixed"
    assert sorted(ex.order(0)) == list(range(len(ex))), "an epoch is a permutation"
    bucketed = D.S2SExamples(packed, "train", len(vocab), 256, 63, seed=0, batch=8)
    assert sorted(bucketed.order(1)) == list(range(len(ex))), "bucketed, still a permutation"
    size = np.diff(bucketed.a["f_start"])[bucketed.a["e_func"]]
    spread = lambda order: np.mean([np.ptp(size[order[i: i + 8]]) for i in range(0, len(order) - 8, 8)])
    assert spread(bucketed.order(1)) < 0.5 * spread(ex.order(1)), "a batch's functions are of like length"


def test_pack_takes_a_slice_of_the_train_shards(packed, data, corpus, tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    shard = D.shard_paths(data, "train")[0]
    for k in range(3):      # three train shards, each the tiny dataset's one
        (tmp_path / "data" / "train" / f"shard-{k:04d}-test.npz").symlink_to(shard)
        (tmp_path / "data" / "train" / f"shard-{k:04d}-test.json").symlink_to(shard.with_suffix(".json"))
    (tmp_path / "data" / "dev").symlink_to(data / "dev")
    one = json.loads((packed / "summary.json").read_text())["train"]["examples"]
    summary = D.pack(tmp_path / "data", corpus, tmp_path / "out", ["train"], size=400, jobs=1, pieces=None,
                     train_shards=slice(1, None, 2))
    assert summary["train"]["examples"] == one, "shard 1 of 0, 1, 2"
    summary = D.pack(tmp_path / "data", corpus, tmp_path / "out", ["train"], size=400, jobs=1, pieces=None,
                     train_shards=slice(0, None, 2))
    assert summary["train"]["examples"] == 2 * one, "shards 0 and 2"


def test_pieces_of_a_split_round_trip(packed, tmp_path):
    parts = fim_data.write_pieces(packed, "dev", tmp_path / "pieces", files=["dev.s2s.npz"])
    assert parts and all(p.stat().st_size < 16 * 2**20 for p in parts)
    assert fim_data.unpack_ready(tmp_path / "pieces", tmp_path / "back") == ["dev"]
    assert (tmp_path / "back" / "dev.s2s.npz").read_bytes() == (packed / "dev.s2s.npz").read_bytes()


def _losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]


@pytest.fixture(scope="module")
def run_dir(packed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    fim_train.train(s2s_train_args(packed, out, 60), S2STask(packed))
    return out


def test_tiny_model_trains_and_resumes_at_its_step(run_dir, packed, tmp_path):
    losses = _losses(run_dir)
    assert len(losses) == 60 and np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert all(r["examples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in log if "loss" in r)
    # 40 steps, then a second call to 45, against one call of 45: the same batches, the same losses
    once, twice = tmp_path / "once", tmp_path / "twice"
    fim_train.train(s2s_train_args(packed, once, 45), S2STask(packed))
    fim_train.train(s2s_train_args(packed, twice, 40), S2STask(packed))
    st = fim_train.train(s2s_train_args(packed, twice, 45), S2STask(packed))
    assert st["step"] == 45
    a, b = _losses(once), _losses(twice)
    assert len(b) == 45 and np.allclose(a[40:], b[40:], rtol=1e-3), (a[40:], b[40:])
    assert (run_dir / "best.pt").exists() and (run_dir / "vocab.json").exists()


def _copy_example(rng, vocab: list[str], name: str) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """A function of known pieces around one name outside the vocabulary, which the hole is: the
    source holds the name elsewhere, so only the pointer can write it."""
    words = {p: i for i, p in enumerate(vocab) if i >= D.FIRST_WORD}
    known = vocab[D.FIRST_WORD:]
    pieces = [str(rng.choice(known)) for _ in range(int(rng.integers(4, 10)))]
    pieces.insert(int(rng.integers(0, len(pieces) + 1)), name)
    a = int(rng.integers(0, len(pieces) + 1))
    pieces[a:a] = [name]
    ids, oov = D.encode_function(pieces, words)
    src, tgt, slots = D.make_example(ids, a, a + 1, len(vocab), 64, 8)
    return src, tgt, slots, oov


def test_the_pointer_copies_a_piece_outside_the_vocabulary():
    vocab = D.SPECIALS + [f"<oov{j}>" for j in range(D.OOV_SLOTS)] + ["x", "(", ")", "+", "=", "1", "self"]
    torch.manual_seed(0)
    model = S2SModel(S2SConfig(vocab=len(vocab), d=32, n_head=2, d_ff=64, enc_layers=1, dec_layers=1, max_src=64,
                               max_tgt=8, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        rows = [_copy_example(rng, vocab, f"name{rng.integers(1000)}")[:2] for _ in range(16)]
        src, tin, tout = (torch.from_numpy(x) for x in D.collate(rows))
        loss = model.loss(src, tin, tout)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    hits = 0
    for k in range(20):
        name = f"never_seen_{k}"
        src, tgt, slots, oov = _copy_example(rng, vocab, name)
        assert tgt.tolist() == [D.FIRST_SLOT + slots.index(oov.index(name))], "the target is the name's slot"
        with torch.no_grad():
            logp = model(torch.from_numpy(src)[None], torch.tensor([[D.BOS]]))[0, -1]
        top = int(logp.argmax())
        hits += D.FIRST_SLOT <= top < D.FIRST_WORD and oov[slots[top - D.FIRST_SLOT]] == name
        assert logp[D.FIRST_SLOT + len(slots):D.FIRST_WORD].exp().max() < 1e-6, "no slot the source lacks"
    assert hits >= 18, hits
    with torch.no_grad():          # the gate turned to the generator alone: it cannot write the name
        model.gate.bias += 50.0
        logp = model(torch.from_numpy(src)[None], torch.tensor([[D.BOS]]))[0, -1]
    assert logp[D.FIRST_SLOT:D.FIRST_WORD].exp().max() < 1e-6


def test_candidates_for_real_holes_judged_by_eval(run_dir, data, corpus):
    holes, found = V.eval_holes(data, corpus, "test", 4)
    assert found == 4
    model, vocab = SE.load_run(run_dir)
    words = {p: i for i, p in enumerate(vocab) if i >= D.FIRST_WORD}
    hole = holes[0]
    truth = hole.source[hole.start: hole.end].decode()
    src, slots = S2S_SEARCH.hole_source(hole, words, model.cfg.vocab, model.cfg.max_src, model.cfg.max_tgt)
    assert int((src == D.HOLE).sum()) == 1 and len(src) <= model.cfg.max_src
    # the truth, as pieces and back, is exact by eval's scoring
    code = hole.function_code().decode()
    pieces, first, spans = D.code_pieces(LANG, code)
    a, b = D.hole_pieces(first, spans, len(pieces), hole.start - hole.fn_start, hole.end - hole.fn_start)
    assert V.judge(hole, [("nothing_like_it", -1.0), (D.pieces_text(LANG, pieces[a:b]), -2.0)]).acc == 1
    check = V.hole_check(hole, hole.tree.lang, hole.tree.lang.new_parser())
    plain = SE.candidates(model, vocab, hole, 3)["plain"]
    assert plain and all(isinstance(t, str) and t for t, _ in plain)
    assert [lp for _, lp in plain] == sorted((lp for _, lp in plain), reverse=True)
    both = SE.candidates(model, vocab, hole, 3, check)
    assert both["plain"] == plain, "one search, the same plain list"
    assert all(check(t) for t, _ in both["grammar"]) and check(truth)
    res = SE.evaluate(model, vocab, holes[:2], beam=3)
    assert set(res) == {"plain", "grammar"} and res["plain"]["n"] == 2
    block = V.report([("s2s", res)], None, "header")
    assert "| s2s, plain beam |" in block and "| s2s, grammar beam |" in block
