"""Packed features and the batched training step (model/packed.py, model/steps.py), for both wirings
(context_once, and the paper's: PaperBatch and steps.paper_log_probs), against the reference batches
of model/batching.py (themselves checked against paths.step_paths)."""
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from anycode.model import batching, packed, steps
from anycode.model.slm import SLM, SLMConfig

from slm_fixtures import real_examples, tiny_dataset, vocab_of

torch.set_num_threads(1)
WIRINGS = ("once", "paper")


def tiny_model(vocab, context_once: bool) -> SLM:
    torch.manual_seed(0)
    cfg = SLMConfig(n_types=len(vocab.node_types), n_subtokens=len(vocab.subtokens), d_type=24, d_index=8,
                    d_subtoken=32, d_lstm=16, n_layers=2, n_heads=2, d_ff=32, context_once=context_once,
                    file_tokens=16)
    model = SLM(cfg).eval()
    with torch.no_grad():       # a W_f unlike W_c, so that file copies are told apart from leaf copies
        model.W_f.normal_()
    return model


@pytest.fixture(scope="module")
def setup():
    examples = real_examples()
    vocab = vocab_of(examples)
    return examples, vocab, {w: tiny_model(vocab, context_once=w == "once") for w in WIRINGS}


def packed_batch(feats, wiring: str):
    """The packed batch of a wiring (the paper's in more than one bucket of set sizes)."""
    if wiring == "once":
        return packed.collate_examples(feats).to("cpu")
    batch = packed.collate_examples(feats, paper=True)
    assert len(batch.buckets) > 1
    return batch.to("cpu")


@pytest.mark.parametrize("wiring,seed,file_tokens", [("once", 1, 16), ("once", 2, 0), ("once", 3, 16),
                                                     ("paper", 1, 16), ("paper", 2, 0), ("paper", 3, 16),
                                                     ("paper", 4, 0)])
def test_packed_loss_equals_the_reference_loss(setup, wiring, seed, file_tokens):
    examples, vocab, models = setup
    model = models[wiring]
    if not file_tokens:
        model = SLM(replace(model.cfg, file_tokens=0)).eval()
        model.load_state_dict({k: v for k, v in models[wiring].state_dict().items() if k != "W_f"})
    picked = random.Random(seed).sample(examples, 24)
    feats = [batching.featurize(t, h, vocab, file_tokens=file_tokens) for t, h in picked]
    ref = batching.collate(feats, context_once=wiring == "once").to("cpu")
    fast = packed_batch(feats, wiring)
    log_probs = steps.step_log_probs if wiring == "once" else steps.paper_log_probs
    with torch.no_grad():
        want = batching.step_log_probs(model, ref)
        got = log_probs(model, fast)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    loss, stats = steps.batch_loss(model, fast)
    ref_loss, ref_stats = batching.batch_loss(model, ref)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert abs(float(stats["nll_sum"]) - ref_stats["nll_sum"]) < 1e-3
    assert abs(float(stats["value_nll_sum"]) - ref_stats["value_nll_sum"]) < 1e-3


def test_the_transformer_over_sets_laid_end_to_end_is_the_transformer_of_each_set():
    torch.manual_seed(3)
    model = SLM(SLMConfig(n_types=10, n_subtokens=20, d_type=24, d_index=8, d_subtoken=32, d_lstm=16, n_layers=2,
                          n_heads=2, d_ff=32)).eval()
    sizes = [3, 1, 7, 5, 7]
    x = torch.randn(sum(sizes), 16)
    cu = torch.tensor([0, *np.cumsum(sizes)], dtype=torch.int32)
    with torch.no_grad():
        got = steps.set_transformer(model, x, cu, max(sizes))
        want = torch.cat([model.transformer(x[a:b].unsqueeze(0)).squeeze(0) for a, b in zip(cu[:-1], cu[1:])])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_compiled_transformer_over_sets_gives_the_same_for_batches_of_any_shape(monkeypatch):
    """What train.py runs on CUDA (steps.compile_set_transformer), here through the CPU's padded
    attention: the same outputs, and one graph for every batch (dynamic shapes, no recompile)."""
    from torch._dynamo.utils import counters
    torch.manual_seed(3)
    model = SLM(SLMConfig(n_types=10, n_subtokens=20, d_type=24, d_index=8, d_subtoken=32, d_lstm=16, n_layers=2,
                          n_heads=2, d_ff=32)).eval()
    monkeypatch.setattr(steps, "_set_transformer", steps._set_transformer)
    steps.compile_set_transformer()
    torch._dynamo.reset()
    counters.clear()
    for sizes in ([3, 1, 7, 5, 7], [2, 9, 4], [6, 6, 6, 6, 1, 2, 11]):
        x = torch.randn(sum(sizes), 16)
        cu = torch.tensor([0, *np.cumsum(sizes)], dtype=torch.int32)
        with torch.no_grad():
            got = steps._set_transformer(model, x, cu, max(sizes))
            torch.testing.assert_close(got, steps.set_transformer(model, x, cu, max(sizes)), atol=1e-5, rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1


def test_a_label_no_source_votes_for_costs_what_the_reference_floor_costs(setup):
    examples, vocab, models = setup
    feats = [batching.featurize(t, h, vocab, file_tokens=16) for t, h in random.Random(5).sample(examples, 24)]
    fast = packed_batch(feats, "paper")
    with torch.no_grad():
        before = steps.paper_log_probs(models["paper"], fast, ordered=False)
        fast.p_label[fast.p_value[0]] = 10**6          # a copy symbol that nothing in the batch holds
        after = steps.paper_log_probs(models["paper"], fast, ordered=False)
        loss, _ = steps.batch_loss(models["paper"], fast)
    k = int(fast.p_value[0])
    assert float(after[k]) == pytest.approx(steps.LOG_FLOOR)
    assert torch.equal(torch.cat([after[:k], after[k + 1:]]), torch.cat([before[:k], before[k + 1:]]))
    assert float(loss) < -float(before.mean()) + 70 / len(before) + 1e-3, "not the 1e9 of an unfloored NEG"


@pytest.mark.parametrize("wiring", WIRINGS)
def test_packed_loss_trains(setup, wiring):
    examples, vocab, models = setup
    model = SLM(models[wiring].cfg)
    model.load_state_dict(models[wiring].state_dict())
    model.train()
    feats = [batching.featurize(t, h, vocab, file_tokens=16) for t, h in examples[:30]]
    b = packed.collate_examples(feats, paper=wiring == "paper").to("cpu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        loss, _ = steps.batch_loss(model, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < first
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_store_gives_the_same_batches_as_featurizing(tmp_path):
    from anycode.model.dataset import Shard, shard_paths
    from anycode.model.vocab import Vocab
    data = tiny_dataset(tmp_path / "data")
    vocab = Vocab.load(data / "vocab.json")
    folder = packed.build(data, "train", tmp_path / "feat", vocab, file_tokens=16, jobs=1, log=lambda m: None)
    store = packed.PackedSplit(folder)
    shard = Shard(shard_paths(data, "train")[0])
    assert len(store) == len(shard)
    ids = np.random.default_rng(0).choice(len(store), 20, replace=False)
    got = store.collate(ids)
    want = packed.collate_examples([batching.featurize(*shard.example(int(i)), vocab, file_tokens=16)
                                    for i in sorted(ids)])
    for f in ("ctx_values", "ctx_types", "ctx_copy", "root_types", "chain_types", "gen_types", "gen_copy",
              "step_label", "step_root", "set_rows", "value_set", "file_symbols"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    # file tokens: the same values behind each example's rows
    assert np.array_equal(got.ftok_values[np.maximum(got.file_rows - 1, 0)] * (got.file_rows > 0)[..., None],
                          want.ftok_values[np.maximum(want.file_rows - 1, 0)] * (want.file_rows > 0)[..., None])
    assert np.array_equal(store.steps[ids], [len(batching.featurize(*shard.example(int(i)), vocab).step_label)
                                             for i in ids])
    # built again: reused, not redone
    assert packed.build(data, "train", tmp_path / "feat", vocab, file_tokens=16, jobs=1,
                        log=lambda m: pytest.fail(m)) == folder


def test_a_partial_feature_store_names_the_file(tmp_path):
    from anycode.model.vocab import Vocab
    data = tiny_dataset(tmp_path / "data")
    vocab = Vocab.load(data / "vocab.json")
    folder = packed.build(data, "train", tmp_path / "feat", vocab, file_tokens=16, jobs=1, log=lambda m: None)
    shard_dir = next(p for p in folder.iterdir() if p.is_dir())
    f = shard_dir / "leaf_types.npy"
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.raises(packed.FeatureError, match="leaf_types.npy"):
        packed.PackedSplit(folder)


def test_bucket_widths_are_a_ladder_of_multiples_of_eight():
    sizes = np.array([1, 8, 9, 40, 41, 200, 0])
    w = packed.bucket_widths(sizes)
    assert (w >= sizes).all() and (w % 8 == 0).all()
    assert (w <= np.maximum(8, np.ceil(sizes * 1.25 / 8) * 8 + 8)).all()


def test_training_runs_the_paper_wiring_on_packed_batches_and_resumes_exactly(tmp_path, monkeypatch):
    from anycode.model import train
    from slm_fixtures import tiny_dataset
    calls = []
    real = steps.paper_log_probs
    monkeypatch.setattr(steps, "paper_log_probs", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = tiny_dataset(tmp_path / "data")
    cfg = replace(train.CONFIGS["tiny"], targets_per_batch=96, log_every=1000, eval_every=1000, eval_examples=2,
                  dev_loss_examples=16)
    assert cfg.packed and not cfg.context_once and cfg.file_tokens
    quiet = lambda *a: None
    whole = train.train(data, tmp_path / "a", cfg, max_steps=6, device="cpu", log=quiet)["losses"]
    assert len(calls) >= 6 and (tmp_path / "a" / "features" / "train" / "meta.json").exists()
    train.train(data, tmp_path / "b", cfg, max_steps=4, device="cpu", log=quiet)
    rest = train.train(data, tmp_path / "b", cfg, max_steps=6, device="cpu", log=quiet)["losses"]
    assert rest == pytest.approx(whole[4:], abs=1e-6, rel=0)
    # the reference path stays selectable, and a checkpoint from before `packed` resumes on its old path
    assert train.parse_overrides(cfg, ["packed=false"]).packed is False
    ck = torch.load(tmp_path / "b" / "ckpt.pt", map_location="cpu", weights_only=False)
    del ck["config"]["packed"]
    torch.save(ck, tmp_path / "b" / "ckpt.pt")
    calls.clear()
    train.train(data, tmp_path / "b", cfg, max_steps=7, device="cpu", log=quiet)
    assert not calls
