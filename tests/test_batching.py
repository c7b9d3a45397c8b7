"""Batched training steps with prefix caching equal the paper's S_t and R_t encoded from scratch."""
import random

import pytest
import torch

from anycode.model import batching
from anycode.model.features import context_features
from anycode.model.paths import context_paths, step_paths, target_steps
from anycode.model.slm import SLM, SLMConfig

from slm_fixtures import encode_step_from_scratch, real_examples, vocab_of

torch.set_num_threads(1)


def reference(model, vocab, tree, h):
    """Every path of step_paths encoded whole with SLM.encode: [(paths [P, d], root [d], child index)]."""
    f = context_features(tree, h, vocab)
    steps = target_steps(tree, h, f.whole_tokens)
    ctx = context_paths(tree, h)
    out = []
    for t in range(len(steps)):
        sp = step_paths(tree, h, steps, t, ctx)
        hp, hr = encode_step_from_scratch(model, vocab, sp)
        out.append((hp, hr[0], sp.child_index, steps[t]))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    examples = real_examples()
    vocab = vocab_of(examples)
    torch.manual_seed(0)
    cfg = SLMConfig(n_types=len(vocab.node_types), n_subtokens=len(vocab.subtokens), d_type=24, d_index=8,
                    d_subtoken=32, d_lstm=16, n_layers=1, n_heads=2, d_ff=32)
    model = SLM(cfg).eval()
    return examples, vocab, model


def test_cached_batch_equals_paths_encoded_from_scratch(setup):
    examples, vocab, model = setup
    rng = random.Random(1)
    picked = rng.sample(examples, 12)
    b = batching.make_batch(picked, vocab).to("cpu")
    with torch.no_grad():
        x = batching.step_inputs(model, b)
        s = 0
        for tree, h in picked:
            for paths, root, child, step in reference(model, vocab, tree, h):
                n = int(b.set_mask[s].sum())
                assert n == paths.shape[0]
                torch.testing.assert_close(x.paths[s, :n], paths, atol=1e-5, rtol=0)
                torch.testing.assert_close(x.root[s], root, atol=1e-5, rtol=0)
                assert int(x.child_index[s]) == child
                assert bool(b.is_value[s]) == step.is_value
                s += 1
        assert s == b.n_targets


def test_labels_are_type_ids_and_symbol_ids(setup):
    examples, vocab, model = setup
    tree, h = examples[3]
    f = context_features(tree, h, vocab)
    steps = target_steps(tree, h, f.whole_tokens)
    b = batching.make_batch([(tree, h)], vocab)
    for s, lab in zip(steps, b.labels):
        if s.is_value:
            sid = f.symbols.id(s.label)
            assert lab == (1 if sid is None else sid)
        else:
            assert lab == vocab.type_of(s.label)
    # the value steps' copy rows: context leaves first, as the features give them
    n = len(f.paths.leaves)
    if b.copy_symbols.shape[0]:
        assert (b.copy_symbols[0, :n] == f.leaf_copy).all()


def test_loss_is_finite_and_differentiable(setup):
    examples, vocab, model = setup
    model.train()
    b = batching.make_batch(examples[:6], vocab).to("cpu")
    loss, stats = batching.batch_loss(model, b)
    loss.backward()
    assert torch.isfinite(loss) and stats["targets"] == b.n_targets
    assert model.C.grad is not None and model.sub_emb.weight.grad is not None
    model.eval()


def test_step_counts_for_bucketing_bound_the_real_ones(tmp_path):
    from anycode.model.dataset import Shard
    from slm_fixtures import tiny_dataset
    data = tiny_dataset(tmp_path)
    from anycode.model.dataset import shard_paths
    from anycode.model.vocab import Vocab
    vocab = Vocab.load(data / "vocab.json")
    shard = Shard(shard_paths(data, "train")[0])
    counts = batching.approx_step_counts(shard)
    for i in range(0, len(shard), max(1, len(shard) // 30)):
        tree, h = shard.example(i)
        exact = len(target_steps(tree, h, context_features(tree, h, vocab).whole_tokens))
        no_copy = len(target_steps(tree, h))
        assert exact <= counts[i] == no_copy


def test_path_counts_for_bucketing_match_the_context_paths(tmp_path):
    from anycode.model.dataset import Shard, shard_paths
    from anycode.model.paths import context_paths
    from slm_fixtures import tiny_dataset
    shard = Shard(shard_paths(tiny_dataset(tmp_path), "train")[0])
    for cap in (200, 5):
        counts = batching.approx_path_counts(shard, cap)
        for i in range(0, len(shard), max(1, len(shard) // 30)):
            tree, h = shard.example(i)
            c = context_paths(tree, h, max_paths=cap)
            assert counts[i] == min(cap, len(c.leaves) + c.dropped_far + c.dropped_long)


def test_packed_encode_equals_step_by_step(setup):
    """`encode` from the zero state runs one fused LSTM over packed paths; given a state it steps
    node by node with `lstm_step`.  Same paths, lengths 0 to L, same states."""
    _, vocab, model = setup
    g = torch.Generator().manual_seed(3)
    n, L = 40, 9
    types = torch.randint(1, len(vocab.node_types), (n, L), generator=g)
    index = torch.randint(0, 6, (n, L), generator=g)
    lengths = torch.randint(0, L + 1, (n,), generator=g)
    lengths[:3] = torch.tensor([0, L, 1])
    values = torch.randint(1, len(vocab.subtokens), (n, 3), generator=g)
    for first in (model.embed_value(values), None):
        fused = model.encode(first, types, index, lengths)
        stepped = model.encode(first, types, index, lengths, state=model.initial_state(n))
        for a, b in zip(fused, stepped):
            assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    h, c = model.encode(None, types, index, lengths)
    assert not h[:, 0].any() and not c[:, 0].any()      # a path of no nodes keeps the zero state


def test_context_once_batch_equals_its_sets_encoded_from_scratch(setup):
    """context_once: context paths end at p and are contextualized alone, the generated paths of
    each step alone; the batch's h~ at every step equals that spelled out from paths.step_paths."""
    from dataclasses import replace
    examples, vocab, base = setup
    model = SLM(replace(base.cfg, context_once=True)).eval()
    model.load_state_dict(base.state_dict())
    picked = random.Random(2).sample(examples, 10)
    b = batching.make_batch(picked, vocab, context_once=True).to("cpu")
    with torch.no_grad():
        x = batching.step_inputs(model, b)
        got = model.aggregate(x.paths, x.mask, x.root, x.child_index, x.z)
        s = 0
        for tree, h in picked:
            f = context_features(tree, h, vocab)
            steps = target_steps(tree, h, f.whole_tokens)
            ctx = context_paths(tree, h)
            at_p = [(tree.leaf_value(leaf), [tree.node(n) for n in prefix])
                    for leaf, prefix in zip(ctx.leaves, ctx.prefixes)]
            for t in range(len(steps)):
                sp = step_paths(tree, h, steps, t, ctx)
                n = len(ctx.leaves)
                cp, root = encode_step_from_scratch(model, vocab, replace(sp, paths=at_p))
                parts, zs = [cp], [model.contextualize(cp[None], torch.ones(1, n, dtype=torch.bool))[0]]
                if len(sp.paths) > n:
                    gp, _ = encode_step_from_scratch(model, vocab, replace(sp, paths=sp.paths[n:]))
                    parts.append(gp)
                    zs.append(model.contextualize(gp[None], torch.ones(1, len(gp), dtype=torch.bool))[0])
                paths, z = torch.cat(parts)[None], torch.cat(zs)[None]
                want = model.aggregate(paths, torch.ones(paths.shape[:2], dtype=torch.bool), root,
                                       torch.tensor([sp.child_index]), z)
                torch.testing.assert_close(got[s], want[0], atol=1e-5, rtol=0)
                s += 1
        assert s == b.n_targets
    model.train()
    loss, _ = batching.batch_loss(model, b)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
