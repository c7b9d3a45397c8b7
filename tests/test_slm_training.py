"""Training on a tiny real dataset: the loss falls, resuming is exact, decoding reads what training reads."""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from anycode import grammars
from anycode.model import batching, evaluate, train
from anycode.model.checkpoint import load_model
from anycode.model.dataset import Shard, shard_paths
from anycode.model.torch_backend import torch_decoder
from anycode.model.vocab import Vocab

from slm_fixtures import tiny_dataset

torch.set_num_threads(1)   # tiny tensors: one thread is much faster, above all on a busy machine

CFG = replace(train.CONFIGS["tiny"], targets_per_batch=96, log_every=1000, eval_every=1000, eval_examples=2,
              dev_loss_examples=16)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("tinyds"))


def quiet(*a):
    pass


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    # a few hundred examples, seen again and again: the model must fit them
    run = tmp_path_factory.mktemp("run")
    out = train.train(data, run, replace(CFG, lr=1e-2), max_steps=40, device="cpu", log=quiet)
    return run, out


def test_loss_goes_down(trained):
    run, out = trained
    cfg = replace(CFG, lr=1e-2)
    losses = out["losses"]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert (run / "ckpt.pt").exists() and (run / "config.json").exists() and (run / "vocab.json").exists()
    # the run directory loads back as a model for evaluation
    model, vocab, conf = load_model(run)
    assert conf["features"]["max_paths"] == cfg.max_paths and not model.training


def test_resume_gives_the_same_next_loss(data, tmp_path):
    whole = train.train(data, tmp_path / "a", CFG, max_steps=7, device="cpu", log=quiet)["losses"]
    train.train(data, tmp_path / "b", CFG, max_steps=5, device="cpu", log=quiet)
    rest = train.train(data, tmp_path / "b", CFG, max_steps=7, device="cpu", log=quiet)["losses"]
    assert len(rest) == 2
    assert rest == pytest.approx(whole[5:], abs=1e-6, rel=0)


def test_best_weights_by_dev_nll_when_no_accuracy_is_checked(data, tmp_path):
    """A run that checks only the dev loss (config large) still keeps its best weights in best.pt."""
    cfg = replace(CFG, eval_examples=0, eval_every=2)
    train.train(data, tmp_path, cfg, max_steps=6, device="cpu", log=quiet)
    dev = [json.loads(line)["dev"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
           if '"dev"' in line]
    assert len(dev) >= 3
    best = min(dev, key=lambda r: r["dev_nll"])
    state = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=False)["state"]
    assert (tmp_path / "best.pt").exists() and state["best_step"] == best["step"]


def test_epoch_plans_are_bucketed_and_cover_every_example():
    counts = np.random.default_rng(0).integers(3, 40, size=500)
    plan = train.epoch_batches(counts, 128, seed=3, epoch=0)
    ids = np.sort(np.concatenate(plan))
    assert (ids == np.arange(500)).all()
    assert all(counts[b].sum() <= 128 or len(b) == 1 for b in plan)
    assert [list(b) for b in plan] == [list(b) for b in train.epoch_batches(counts, 128, seed=3, epoch=0)]
    assert [list(b) for b in plan] != [list(b) for b in train.epoch_batches(counts, 128, seed=3, epoch=1)]


def test_epoch_plans_group_like_set_sizes_under_a_token_cap():
    rng = np.random.default_rng(1)
    counts = rng.integers(3, 40, size=800)
    paths = rng.integers(1, 200, size=800)
    plan = train.epoch_batches(counts, 512, seed=3, epoch=0, paths=paths, tokens=20_000)
    assert (np.sort(np.concatenate(plan)) == np.arange(800)).all()
    for b in plan:
        assert len(b) == 1 or (counts[b].sum() <= 512 and counts[b].sum() * paths[b].max() <= 20_000)
    # sorted by set size: a batch spans a narrow range of sizes, unlike a random one
    spread = np.median([np.ptp(paths[b]) for b in plan if len(b) > 1])
    assert spread < 20


def test_context_once_trains_from_the_faithful_weights(data, trained, tmp_path):
    """The speed experiment has the same parameters: it starts from a faithful run and learns."""
    cfg = replace(CFG, lr=1e-2, context_once=True)
    fresh = train.train(data, tmp_path / "fresh", cfg, max_steps=40, device="cpu", log=quiet)
    assert all(math.isfinite(x) for x in fresh["losses"])
    assert np.mean(fresh["losses"][-5:]) < 0.8 * np.mean(fresh["losses"][:5])
    out = train.train(data, tmp_path / "once", cfg, max_steps=1, device="cpu", log=quiet, init=trained[0])
    assert out["losses"][0] < 0.8 * fresh["losses"][0]      # the faithful weights carry over
    model, _, conf = load_model(tmp_path / "once")
    assert model.cfg.context_once and conf["train"]["context_once"]
    from anycode.model.export import export
    manifest = export(model, Vocab.load(tmp_path / "once" / "vocab.json"), conf, tmp_path / "graphs")
    assert "contextualize.onnx" in manifest["files"] and manifest["model"]["context_once"]
    assert train.parse_overrides(CFG, ["context_once=true"]).context_once
    with pytest.raises(SystemExit):
        train.parse_overrides(CFG, ["context_once=maybe"])


def test_a_new_run_can_start_from_trained_weights(data, tmp_path):
    train.train(data, tmp_path / "a", CFG, max_steps=4, device="cpu", log=quiet)
    out = train.train(data, tmp_path / "b", CFG, max_steps=1, device="cpu", log=quiet, init=tmp_path / "a")
    fresh = train.train(data, tmp_path / "c", CFG, max_steps=1, device="cpu", log=quiet)
    assert out["state"]["init"] == str(tmp_path / "a")
    assert out["losses"][0] != pytest.approx(fresh["losses"][0], abs=1e-6)
    ckpt = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)
    assert ckpt["state"]["step"] == 1      # the optimizer and the step count start afresh


@pytest.mark.parametrize("context_once,file_tokens", [(False, 0), (True, 0), (False, 64)])
def test_decoding_reads_the_same_steps_as_training(data, context_once, file_tokens):
    vocab = Vocab.load(data / "vocab.json")
    torch.manual_seed(0)
    model = train.SLM(train.model_config(replace(CFG, context_once=context_once, file_tokens=file_tokens),
                                         vocab)).eval()
    shard = Shard(shard_paths(data, "dev")[0])
    items = [shard.example(i) for i in range(0, len(shard), max(1, len(shard) // 8))][:8]
    dec = torch_decoder(model, vocab, lang=grammars.get("python"))
    with torch.no_grad():
        b = batching.make_batch(items, vocab, context_once=context_once, file_tokens=file_tokens).to("cpu")
        if file_tokens:
            assert b.file_symbols.shape[1] > 0 and (b.file_symbols >= 0).any()
        teacher = batching.step_log_probs(model, b)
    forced = [x for t, h in items for x in dec.score_target(dec.prepare(t, h), t, h)[1]]
    labels = b.labels.tolist()
    for k, (a, c) in enumerate(zip(forced, teacher.tolist())):
        if labels[k] == 1:
            continue          # an unknown type or value: decoding never produces it
        assert a == pytest.approx(c, abs=1e-4)


def test_beam_search_returns_ranked_trees_that_parse(data, trained):
    model, vocab, _ = load_model(trained[0])
    shard = Shard(shard_paths(data, "test")[0])
    items = [shard.example(i) for i in range(6)]
    from anycode.model.grammar_table import GrammarTable
    table = GrammarTable.load(data / "grammar.json")
    res = evaluate.decode(model, vocab, items, beam=5, table=table, parse_only=False, drop_forced=False,
                          lang=grammars.get("python"))
    assert len(res) == 6
    for cands in res:
        assert 1 <= len(cands) <= 5
        lps = [c.logp for c in cands]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        for c in cands:
            if c.parsed is not None:
                assert evaluate.same_code(evaluate.print_or_none(c.parsed, grammars.get("python")), c.code)


def test_metrics_count_exact_tree_and_subtoken_matches(data):
    from anycode.grammars import python as g
    shard = Shard(shard_paths(data, "test")[0])
    tree, h = shard.example(0)
    truth = evaluate.truth_code(tree, h)
    node = g.parse_expression(truth)
    exact = evaluate.Prediction(truth, -0.1, node, node)
    sc = evaluate.score([exact], tree, h)
    assert (sc.acc, sc.tree, sc.sub) == (0, 0, 0)
    assert evaluate.subtoken_diff(g.parse_expression("a.get_x(b)"), g.parse_expression("a.set_x(b)"), g.PYTHON) == 1
    assert evaluate.subtoken_diff(g.parse_expression("a.get_x(b)"), g.parse_expression("a.get_x(b, c)"), g.PYTHON) is None
    m = evaluate.summarize([evaluate.Scored(0, 0, 0), evaluate.Scored(None, 3, 2)])
    assert m["acc@1"] == 50 and m["acc@5"] == 50 and m["tree@5"] == 100 and m["subtoken@1"] == 50


def test_eval_can_sample_only_the_holes_of_longer_functions(tmp_path):
    # the test module built twice, with holes in functions of up to 20 and up to 60 lines: skipping
    # the first's functions leaves the examples of the functions of 21-60 lines, in the fixed shuffle
    from anycode.model import dataset
    from slm_fixtures import TEST_MODULES, extract
    for limit in (20, 60):
        (tmp_path / str(limit) / "test").mkdir(parents=True)
        dataset.write_shard(tmp_path / str(limit) / "test" / "shard-0000-test.npz", extract(TEST_MODULES, limit),
                            grammars.get("python"), max_function_lines=limit)
    short, whole = (evaluate.sample_refs(tmp_path / str(k), "test") for k in (20, 60))
    longer = evaluate.sample_refs(tmp_path / "60", "test", skip_functions_of=tmp_path / "20")
    assert 0 < len(longer) == len(whole) - len(short)
    src = lambda r: r[0].source_of(int(r[0].arrays["e_func"][r[1]]))
    short_sources = {src(r) for r in short}
    assert short_sources.isdisjoint(src(r) for r in longer)
    assert [src(r) for r in longer] == [src(r) for r in whole if src(r) not in short_sources]
    first = evaluate.sample_refs(tmp_path / "60", "test", 3, skip_functions_of=tmp_path / "20")
    assert [i for _, i in first] == [i for _, i in longer[:3]]
    with pytest.raises(SystemExit, match="no shards"):
        evaluate.sample_refs(tmp_path / "60", "test", skip_functions_of=tmp_path / "nowhere")


def test_comprehension_targets_print_from_flat_trees():
    # flat trees keep no field names; the printer needs them for `for ... in ...`
    from anycode.grammars import python as g
    from anycode.model.paths import FlatTree
    src = b"def f(xs):\n    return [x * 2 for x in xs if x]\n"
    fn = g.convert(g.parse(src).root_node.named_children[0])
    t = FlatTree.from_node(fn, g.PYTHON)
    h = next(i for i, ty in enumerate(t.types) if ty == "list_comprehension")
    assert evaluate.truth_code(t, h) == "[x * 2 for x in xs if x]"


def test_a_run_starts_from_weights_of_another_vocabulary(data, trained, tmp_path):
    """A dataset whose vocabulary orders the same names differently gives the same first loss from the
    same start weights (rows follow their names; no dropout, whose masks fall on other rows), and a
    name the weights lack starts at the mean row."""
    other = tmp_path / "other"
    other.mkdir()
    for p in data.iterdir():
        (other / p.name).symlink_to(p.resolve())
    (other / "vocab.json").unlink()
    v = Vocab.load(data / "vocab.json")
    shuffled = Vocab(v.node_types[:3] + v.node_types[3:][::-1], v.subtokens[:4] + v.subtokens[4:][::-1])
    shuffled.save(other / "vocab.json")
    kw = dict(max_steps=1, device="cpu", log=quiet, init=trained[0])
    cfg = replace(CFG, dropout=0.0, lstm_dropout=0.0)
    same = train.train(data, tmp_path / "same", cfg, **kw)
    moved = train.train(other, tmp_path / "moved", cfg, **kw)
    assert moved["losses"][0] == pytest.approx(same["losses"][0], rel=1e-5)

    state = load_model(trained[0])[0].state_dict()
    grown = Vocab(v.node_types + ["new_type"], v.subtokens[:-1] + ["new_subtoken"])
    out, added = train.remap_vocab(state, v, grown)
    assert added == (1, 1)
    assert torch.equal(out["type_emb.weight"][: len(v.node_types)], state["type_emb.weight"])
    assert torch.allclose(out["type_emb.weight"][-1], state["type_emb.weight"][3:].mean(0))
    assert torch.allclose(out["sub_emb.weight"][-1], state["sub_emb.weight"][4:].mean(0))


def test_eval_through_the_exported_graphs_scores_as_the_torch_weights(data, trained, tmp_path):
    """`anycode eval --onnx` decodes with the export in ONNX Runtime (what the server runs): on fp32
    graphs of the same weights it finds what the torch decoder finds; a directory without an export
    is a clear error saying how to make one."""
    import argparse
    from anycode.model.export import export
    export(*load_model(trained[0]), tmp_path / "onnx", "fp32", data / "grammar.json")
    results = {}
    for name, model, extra in (("torch", trained[0], []), ("onnx", tmp_path / "onnx", ["--onnx"])):
        ap = argparse.ArgumentParser()
        evaluate.add_parser(ap)
        args = ap.parse_args(["--model", str(model), "--data", str(data), "--split", "test", "--limit", "12",
                              "--device", "cpu", "--baseline-train", "0", "--json", str(tmp_path / f"{name}.json"),
                              *extra])
        assert evaluate.run(args) == 0
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert "ONNX Runtime" in results["onnx"]["device"] and results["torch"]["device"] == "cpu"
    assert results["onnx"]["examples"] == results["torch"]["examples"] == 12
    slm = "SLM (this model, beam 5)"
    assert results["onnx"]["metrics"][slm] == results["torch"]["metrics"][slm]
    # and candidate by candidate: the same trees, the same log-probabilities to fp32's precision
    from anycode.model.grammar_table import GrammarTable
    model, vocab, _ = load_model(trained[0])
    table = GrammarTable.load(data / "grammar.json")
    shard = Shard(shard_paths(data, "test")[0])
    items = [shard.example(i) for i in range(8)]
    want = evaluate.decode(model, vocab, items, beam=5, table=table, parse_only=False, lang=grammars.get("python"))
    dec, precision = evaluate.onnx_decoder(tmp_path / "onnx")
    assert precision == "fp32" and dec.table is not None
    got = evaluate.decode_with(dec, items, beam=5, parse_only=False)
    assert sum(len(cs) for cs in want) > 8
    assert [[c.code for c in cs] for cs in got] == [[c.code for c in cs] for cs in want]
    assert np.allclose([c.logp for cs in got for c in cs], [c.logp for cs in want for c in cs], atol=1e-3)
    ap = argparse.ArgumentParser()
    evaluate.add_parser(ap)
    with pytest.raises(SystemExit, match="no manifest.json.*anycode export"):
        evaluate.run(ap.parse_args(["--model", str(trained[0]), "--data", str(data), "--onnx"]))
