"""Time training steps of the packed path (model/packed.py, model/steps.py) on the device (issue 22).

    python3 tools/device/bench_steps.py DATA FEATURES [--shards N] [--jobs 16] [--wiring paper|once]
        [--model model/shipped/config.json] [--variant NAME[:k=v,...]] ... [--targets 2048,8192]
        [--steps 40] [--warmup 8] [--workers 8] [--profile] [--compile] [--device cuda]

Featurizes the first N train shards of DATA into FEATURES (packed.build, reused by a later call on
the same machine), then for every variant (the config's model section with the variant's overrides,
e.g. `40M:d_lstm=512,n_layers=8,d_ff=2048`) and batch size runs the training loop of train.py
(Adam, bf16 autocast on CUDA, gradient clipping, batches from train.BatchStream through DataLoader
workers) and times `--steps` steps after `--warmup`.  One line each: examples/s and targets/s (the
issue's measure: train.py logs the same per window), steps/s, the share of time waiting for data, peak
GPU memory, the transformer's tokens a step and the share of them that is padding.  Before that, the
host side alone: a batch's collate time on one core.  `--profile`: the top kernels of a few steps.
`--compile`: the transformer over sets through torch.compile, as train.py runs it on CUDA.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


def featurize(data: Path, features: Path, shards: int, jobs: int, cfg):
    """The first `shards` train shards of `data`, featurized into features/train (a view of the
    dataset with only those shards, so that packed.build's key is stable across calls)."""
    from anycode.model import packed
    from anycode.model.vocab import Vocab
    view = features.parent / (features.name + "_data")
    (view / "train").mkdir(parents=True, exist_ok=True)
    for f in ("vocab.json", "grammar.json", "summary.json"):
        if (data / f).exists() and not (view / f).exists():
            os.symlink((data / f).resolve(), view / f)
    for p in sorted((data / "train").glob("shard-*.npz"))[:shards]:
        for q in (p, p.with_suffix(".json")):
            if not (view / "train" / q.name).exists():
                os.symlink(q.resolve(), view / "train" / q.name)
    vocab = Vocab.load(view / "vocab.json")
    t0 = time.time()
    folder = packed.build(view, "train", features, vocab, cfg.max_paths, cfg.max_length, cfg.file_tokens, jobs,
                          log=lambda m: print(m, flush=True))
    print(f"features: {folder} in {time.time() - t0:.0f}s", flush=True)
    return folder, vocab


def host_side(store, stream, paper: bool, n: int = 6) -> None:
    """Collate time of a batch on one core, and the transformer's tokens (real and padded)."""
    plan = stream.plan(0)
    t0 = time.time()
    real = padded = ref = targets = examples = 0
    for ids in plan[:n]:
        b = store.collate(ids, paper=paper)
        targets += b.n_targets
        examples += b.n_examples
        if paper:
            real += int(b.set_valid.sum())
            padded += len(b.set_valid)
            width = max(w for _, _, w, _, _ in b.buckets)
            ref += b.n_targets * width
    dt = (time.time() - t0) / n
    print(f"host: collate {dt * 1e3:.0f} ms a batch on one core ({examples / n:.0f} examples, {targets / n:.0f} "
          f"targets a batch)", flush=True)
    if paper:
        print(f"host: transformer tokens a batch {padded / n:.0f}, padding {1 - real / max(padded, 1):.1%} "
              f"(one width for the whole batch would pad {1 - real / max(ref, 1):.1%}); "
              f"mean set size {real / max(targets, 1):.1f}", flush=True)


def bench(model, stream, dev, steps: int, warmup: int, workers: int, profile: bool) -> dict:
    from anycode.model import steps as fast
    from anycode.model import train
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else \
        (lambda: torch.autocast("cpu", enabled=False))
    loader = iter(train.make_loader(stream, 0, workers, pin=dev.type == "cuda"))
    model.train()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    wait = examples = targets = 0
    prof = None
    for k in range(warmup + steps):
        if k == warmup:
            sync()
            t0, wait, examples, targets = time.time(), 0.0, 0, 0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            if profile:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                          torch.profiler.ProfilerActivity.CUDA])
                prof.__enter__()
        tw = time.time()
        batch = next(loader)
        b = batch.to(dev)
        wait += time.time() - tw
        with amp():
            loss, _ = fast.batch_loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        examples += batch.n_examples
        targets += batch.n_targets
        if prof is not None and k == warmup + min(steps, 5) - 1:
            sync()
            prof.__exit__(None, None, None)
            print(prof.key_averages().table(sort_by="cuda_time_total" if dev.type == "cuda" else "cpu_time_total",
                                            row_limit=30), flush=True)
            prof = None
    sync()
    dt = time.time() - t0
    mem = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else 0.0
    return {"examples_per_s": examples / dt, "targets_per_s": targets / dt, "steps_per_s": steps / dt,
            "wait_share": wait / dt, "peak_gib": mem, "loss": float(loss)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("features", type=Path)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--wiring", choices=("paper", "once"), default="paper")
    ap.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[2] / "model/shipped/config.json")
    ap.add_argument("--variant", action="append", default=None,
                    help="NAME or NAME:k=v,k=v (model overrides); default: shipped, 16M, 40M")
    ap.add_argument("--targets", default="2048,8192")
    ap.add_argument("--tokens", type=int, default=0, help="tokens_per_batch (steps x set size cap), 0: none")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compile", action="store_true",
                    help="the transformer over sets through torch.compile, as train.py does on CUDA")
    a = ap.parse_args()
    if a.compile:
        from anycode.model import steps
        steps.compile_set_transformer()

    from anycode.model import packed, train
    from anycode.model.slm import SLM, SLMConfig
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(False)
        print(torch.cuda.get_device_name(), flush=True)
    conf = json.loads(a.model.read_text())
    base = replace(train.CONFIGS["paper"], **{k: v for k, v in conf["train"].items()
                                              if k in train.TrainConfig.__dataclass_fields__})
    base = replace(base, context_once=a.wiring == "once", packed=True, tokens_per_batch=a.tokens)
    folder, vocab = featurize(a.data, a.features, a.shards, a.jobs, base)
    store = packed.PackedSplit(folder)
    print(f"train: {len(store)} examples, {int(store.steps.sum())} targets", flush=True)
    variants = a.variant or ["shipped", "16M:n_layers=8,d_ff=2048", "40M:d_lstm=512,n_layers=8,d_ff=2048"]
    for v in variants:
        name, _, over = v.partition(":")
        kw = {k: type(conf["model"][k])(x) if not isinstance(conf["model"][k], bool) else x.lower() in ("1", "true")
              for k, x in (p.split("=", 1) for p in over.split(",") if p)}
        mcfg = SLMConfig(**dict(conf["model"], **kw, n_types=len(vocab.node_types),
                                n_subtokens=len(vocab.subtokens), context_once=a.wiring == "once"))
        for t in (int(x) for x in a.targets.split(",")):
            cfg = replace(base, targets_per_batch=t, seed=7)
            stream = train.BatchStream(train.PackedExamples(store), vocab, cfg)
            host_side(store, stream, a.wiring == "paper")
            torch.manual_seed(0)
            model = SLM(mcfg).to(dev)
            try:
                r = bench(model, stream, dev, a.steps, a.warmup, a.workers, a.profile)
            except torch.cuda.OutOfMemoryError:
                print(f"{name} ({model.num_parameters() / 1e6:.2f}M) {a.wiring} targets {t}: out of memory", flush=True)
                r = None
            if r:
                print(f"{name} ({model.num_parameters() / 1e6:.2f}M) {a.wiring} targets {t}: "
                      f"{r['examples_per_s']:.0f} examples/s, {r['targets_per_s']:.0f} targets/s, "
                      f"{r['steps_per_s']:.2f} steps/s, wait {r['wait_share']:.0%}, peak {r['peak_gib']:.1f} GiB, "
                      f"loss {r['loss']:.3f}", flush=True)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
