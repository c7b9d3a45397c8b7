"""The padding behind the GPU's CUDA graphs (model/cuda_graphs.py) changes no real row.

CI has no GPU, so the graphs themselves are not captured here: every call that a real completion
makes is run as it is and padded up to its buckets, on the CPU, and the cut-back outputs must
agree.  (On the GPU, a captured graph gave the same outputs as a plain run of the same padded
feed, bit for bit; docs/bench.md.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anycode.model import cuda_graphs
from anycode.model.runtime import SHIPPED, Completer

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def recorded():
    """(graph, feed) of every graph call of a few real completions, float graphs on the CPU."""
    pytest.importorskip("onnx")
    c = Completer(SHIPPED, device="cpu", float_graphs=True)
    calls = []
    run = c.backend._run

    def record(g, feed):
        calls.append((g, {k: np.array(v) for k, v in feed.items()}))
        return run(g, feed)
    c.backend._run = record
    src = (DATA / next(p.name for p in sorted(DATA.glob("*.py")))).read_bytes()
    for marker in (b"return ", b" = ", b"if "):
        at = src.find(marker, len(src) // 3)
        if at > 0:
            cut_to = src.find(b"\n", at)
            c.complete(src[: at + len(marker)] + src[cut_to:], at + len(marker), beam_size=5)
    return c, calls


def test_padded_calls_agree_with_plain_ones(recorded):
    c, calls = recorded
    seen = {g for g, _ in calls}
    assert {"lstm_value", "lstm_node", "score"} <= seen, seen
    padded_any = False
    for g, feed in calls:
        session = c.backend.sessions[g]
        names = [o.name for o in session.get_outputs()]
        plain = session.run(None, feed)
        fitted = cuda_graphs.pad(g, feed)
        assert fitted is not None
        padded, sizes, buckets = fitted
        padded_any |= any(padded[k].shape != feed[k].shape for k in feed)
        got = cuda_graphs.cut(g, names, session.run(None, padded), sizes)
        for a, b in zip(plain, got):
            assert a.shape == b.shape
            assert np.abs(a - b).max() < 1e-4, (g, np.abs(a - b).max())
    assert padded_any


def test_the_runner_answers_every_call_as_a_plain_run(recorded):
    """GraphRunner on the CPU (its padding and IO binding, no CUDA graph): every recorded call is
    answered as a plain run answers it, from bound buffers reused by bucket."""
    import onnxruntime as ort
    from anycode.model.float_graphs import cached
    c, calls = recorded
    manifest = c.manifest["files"]
    runners = {}
    for g, session in c.backend.sessions.items():
        source = cached(c.model_dir / f"{g}.onnx", manifest[f"{g}.onnx"]["sha256"])
        runners[g] = cuda_graphs.GraphRunner(ort, g, source, ort.SessionOptions(), session, device="cpu")
    for g, feed in calls:
        plain = c.backend.sessions[g].run(None, feed)
        got = runners[g].run(feed)
        for a, b in zip(plain, got):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert np.abs(a - b).max() < 1e-4, (g, np.abs(a - b).max())
    assert sum(r.replays for r in runners.values()) == len(calls)
    assert all(len(r.bound) < len(calls) for r in runners.values())


def test_buckets_are_powers_of_two_up_to_a_largest():
    assert cuda_graphs.bucket("n", 1) == 16 and cuda_graphs.bucket("n", 17) == 32
    assert cuda_graphs.bucket("p", 200) == 256 and cuda_graphs.bucket("b", 5) == 8
    assert cuda_graphs.bucket("p", cuda_graphs.LARGEST["p"] + 1) is None
    big = {"values": np.zeros((cuda_graphs.LARGEST["n"] + 1, 8), np.int64)}
    assert cuda_graphs.pad("lstm_value", big) is None          # runs without a CUDA graph


def test_warm_up_feeds_are_whole_buckets_the_graphs_accept(recorded):
    """What the GPU captures at load: every feed is already its own bucket (nothing to pad) and runs."""
    c, _ = recorded
    for g, session in c.backend.sessions.items():
        feeds = cuda_graphs.warm_feeds(g, session.get_inputs())
        assert len(feeds) >= 4, g
        for feed in feeds[:3] + feeds[-1:]:
            padded, sizes, buckets = cuda_graphs.pad(g, feed)
            assert all(padded[k].shape == feed[k].shape for k in feed)
            outs = session.run(None, feed)
            assert all(np.isfinite(o).all() for o in outs if o.dtype == np.float32), g
