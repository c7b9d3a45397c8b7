"""`anycode train`: the SLM trained on dataset shards, nanoGPT style.

    anycode train --data data/dataset/python --out runs/slm [--config tiny|paper|large]
                  [--minutes M] [--max-steps N] [--device auto] [--features DIR]

One loop: bucketed batches of about `targets_per_batch` generation steps
(paper 4.3), Adam, bf16 autocast on CUDA, periodic dev loss and greedy dev
acc@1, checkpoints to RUN_DIR/ckpt.pt that resume exactly (model, optimizer,
scheduler, step, RNG states, data position).  Running the same command again
resumes; a run directory with a log but no checkpoint is an error, not a restart.

Batches: from features computed once per dataset (model/packed.py, in
--features, default RUN_DIR/features) and run by model/steps.py, every step of
the batch at once, for either wiring (`packed`, on by default); with
`packed=false` the reference path featurizes in DataLoader workers
(model/batching.py): the same loss, several times slower.

RUN_DIR holds ckpt.pt (everything), best.pt (model weights with the best dev
acc@1), config.json, vocab.json, grammar.json (when the data has one), log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from anycode.model import batching, evaluate
from anycode.model.checkpoint import load_checkpoint, load_model, pick_device
from anycode.model.dataset import Shard, ShardError, data_language, shard_paths
from anycode.model.slm import SLM, SLMConfig
from anycode.model.vocab import NODE_SPECIALS, SUBTOKEN_SPECIALS, Vocab


# ---------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    # model (paper 4.3: embeddings 512, 2-layer LSTM of 256, 4 transformer layers with 8 heads)
    d_type: int = 384
    d_index: int = 128
    d_subtoken: int = 512
    d_lstm: int = 256
    lstm_layers: int = 2
    n_layers: int = 4
    n_heads: int = 8
    d_ff: int = 1024
    dropout: float = 0.25          # transformer
    lstm_dropout: float = 0.5      # LSTM inputs
    context_once: bool = False     # the speed experiment of SLMConfig.context_once
    packed: bool = True            # batches from packed features (model/packed.py, steps.py); else batching.py
    compile: bool = True           # on CUDA, packed paper wiring: the transformer over sets through torch.compile
    file_tokens: int = 256         # SLMConfig.file_tokens: the file's identifiers copied whole; 0: the paper's
    # features
    max_paths: int = 200
    max_length: int = 24
    # optimisation
    targets_per_batch: int = 512   # paper: about 512 targets a batch
    tokens_per_batch: int = 0      # cap on steps x set size (the transformer's tokens); 0: none
    lr: float = 1e-3               # paper: 1e-4; see MODEL_CARD.md for why higher with warmup here
    warmup_steps: int = 500
    lr_decay: float = 0.95         # multiplied every lr_decay_every steps (paper: 0.95 every 20k)
    lr_decay_every: int = 1000
    grad_clip: float = 1.0
    seed: int = 1234
    # bookkeeping
    log_every: int = 100
    eval_every: int = 2000         # steps between dev checks
    eval_examples: int = 300       # greedy acc@1 on this many dev examples
    dev_loss_examples: int = 1000  # teacher-forced dev loss on this many
    ckpt_minutes: float = 3.0
    workers: int = -1              # DataLoader workers; -1: cores - 2


CONFIGS = {
    "paper": TrainConfig(),
    "tiny": TrainConfig(d_type=24, d_index=8, d_subtoken=32, d_lstm=32, n_layers=1, n_heads=2, d_ff=64,
                        targets_per_batch=128, lr=3e-3, warmup_steps=5, lr_decay_every=10_000,
                        log_every=5, eval_every=10_000, eval_examples=20, dev_loss_examples=40,
                        ckpt_minutes=60.0, workers=0),
    # context_once (docs/model.md: the only wiring that feeds an H200), 16.4M parameters: 8 layers of
    # feed-forward 2048 over the sets; batches of about 16k steps (~1,300 examples)
    "large": TrainConfig(n_layers=8, d_ff=2048, context_once=True, dropout=0.1, lstm_dropout=0.2,
                         targets_per_batch=16384, lr=1e-3, warmup_steps=200, lr_decay_every=700,
                         log_every=100, eval_every=2000, eval_examples=0, dev_loss_examples=2000, workers=-1),
}


def model_config(cfg: TrainConfig, vocab: Vocab) -> SLMConfig:
    return SLMConfig(n_types=len(vocab.node_types), n_subtokens=len(vocab.subtokens), d_type=cfg.d_type,
                     d_index=cfg.d_index, d_subtoken=cfg.d_subtoken, d_lstm=cfg.d_lstm,
                     lstm_layers=cfg.lstm_layers, n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_ff=cfg.d_ff,
                     dropout=cfg.dropout, lstm_dropout=cfg.lstm_dropout, context_once=cfg.context_once,
                     file_tokens=cfg.file_tokens)


# ---------------------------------------------------------------- data


class Examples:
    """The examples of one split: (shard, example) pairs and their step counts."""

    def __init__(self, data_dir: Path, split: str):
        self.files = [str(p) for p in shard_paths(data_dir, split)]
        if not self.files:
            raise FileNotFoundError(f"no shards in {Path(data_dir) / split}")
        self._shards: dict[int, Shard] = {}
        shard_id, example_id, counts, paths = [], [], [], []
        for k in range(len(self.files)):
            c = batching.approx_step_counts(self.shard(k))
            shard_id.append(np.full(len(c), k, np.int32))
            example_id.append(np.arange(len(c), dtype=np.int32))
            counts.append(c)
            paths.append(batching.approx_path_counts(self.shard(k)))
        self.shard_id = np.concatenate(shard_id)
        self.example_id = np.concatenate(example_id)
        self.counts = np.concatenate(counts)
        self.paths = np.concatenate(paths)
        self._shards.clear()     # workers load their own, lazily

    def __len__(self) -> int:
        return len(self.counts)

    def shard(self, k: int) -> Shard:
        s = self._shards.get(k)
        if s is None:
            s = self._shards[k] = Shard(Path(self.files[k]))
        return s

    def example(self, i: int):
        return self.shard(int(self.shard_id[i])).example(int(self.example_id[i]))

    def state(self):
        return {"files": self.files, "shard_id": self.shard_id, "example_id": self.example_id, "counts": self.counts}


def epoch_batches(counts: np.ndarray, targets: int, seed: int, epoch: int, paths: np.ndarray | None = None,
                  tokens: int = 0) -> list[np.ndarray]:
    """Example ids of every batch of an epoch, the batches shuffled.

    Examples are sorted by their number of context paths (random among equals; by step count
    when `paths` is None) and cut into runs of at most `targets` steps and, with `tokens`, at
    most `tokens` steps x paths: every step of a batch runs the transformer over a set padded
    to the batch's largest, so examples of like set sizes waste the least."""
    rng = np.random.default_rng([seed, epoch])
    key = counts if paths is None else paths
    order = np.lexsort((rng.random(len(counts)), key))
    batches, cur, tot, widest = [], [], 0, 0
    for i in order:
        c = int(counts[i])
        w = max(widest, int(paths[i]) if paths is not None else 0)
        if cur and (tot + c > targets or (tokens and (tot + c) * w > tokens)):
            batches.append(np.array(cur, np.int64))
            cur, tot, w = [], 0, int(paths[i]) if paths is not None else 0
        cur.append(int(i))
        tot += c
        widest = w
    if cur:
        batches.append(np.array(cur, np.int64))
    perm = rng.permutation(len(batches))
    return [batches[j] for j in perm]


class PackedExamples:
    """The examples of one split from its feature store (model/packed.py): exact step and path counts."""

    def __init__(self, store):
        self.store = store
        self.counts = store.steps
        self.paths = store.leaves
        self.files = store.meta["shards"]

    def __len__(self) -> int:
        return len(self.counts)


class BatchStream(torch.utils.data.Dataset):
    """Batch number k of an endless sequence of epochs; position k is the data position."""

    def __init__(self, examples, vocab: Vocab, cfg: TrainConfig):
        self.examples, self.vocab, self.cfg = examples, vocab, cfg
        self._epoch_plans: dict[int, list[np.ndarray]] = {}
        self._starts = [0]

    def plan(self, epoch: int) -> list[np.ndarray]:
        p = self._epoch_plans.get(epoch)
        if p is None:
            if len(self._epoch_plans) > 2:
                self._epoch_plans.clear()
            p = self._epoch_plans[epoch] = epoch_batches(self.examples.counts, self.cfg.targets_per_batch,
                                                         self.cfg.seed, epoch, self.examples.paths,
                                                         self.cfg.tokens_per_batch)
        return p

    def locate(self, k: int) -> tuple[int, int]:
        while self._starts[-1] <= k:
            e = len(self._starts) - 1
            self._starts.append(self._starts[-1] + len(self.plan(e)))
        e = max(j for j in range(len(self._starts) - 1) if self._starts[j] <= k)
        return e, k - self._starts[e]

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, k: int) -> batching.Batch:
        e, j = self.locate(k)
        ids = self.plan(e)[j]
        if isinstance(self.examples, PackedExamples):
            return self.examples.store.collate(ids, paper=not self.cfg.context_once)
        return batching.make_batch([self.examples.example(int(i)) for i in ids], self.vocab,
                                   self.cfg.max_paths, self.cfg.max_length, self.cfg.context_once,
                                   self.cfg.file_tokens)


class FromPosition(torch.utils.data.Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


def _identity(x):
    return x


def make_loader(stream: BatchStream, start: int, workers: int, pin: bool = False):
    # its own generator: creating the loader must not draw from the global RNG (exact resume)
    return torch.utils.data.DataLoader(stream, batch_size=None, sampler=FromPosition(start), num_workers=workers,
                                       collate_fn=_identity, prefetch_factor=8 if workers else None,
                                       persistent_workers=False, generator=torch.Generator().manual_seed(0),
                                       pin_memory=pin)


# ---------------------------------------------------------------- model io


def save_json(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def run_config(cfg: TrainConfig, mcfg: SLMConfig, language: str) -> dict:
    return {"language": language, "model": asdict(mcfg), "features": {"max_paths": cfg.max_paths, "max_length": cfg.max_length},
            "train": asdict(cfg)}


def init_from(model: SLM, state: dict) -> list[str]:
    """Copy every weight of `state` that the model has: whole where the shapes agree, the overlapping
    block where they differ (a wider feed-forward, more layers: the rest keeps its fresh values).
    Returns the names of the model's weights that took nothing."""
    own = model.state_dict()
    untouched = []
    with torch.no_grad():
        for k, v in own.items():
            w = state.get(k)
            if w is None or w.dim() != v.dim():
                untouched.append(k)
                continue
            if w.shape == v.shape:
                v.copy_(w.to(v.dtype))
            else:
                block = tuple(slice(0, min(a, b)) for a, b in zip(v.shape, w.shape))
                v[block] = w[block].to(v.dtype)
        _grow_transformer(model, state)
    return untouched


def remap_vocab(state: dict, old: Vocab, new: Vocab) -> tuple[dict, tuple[int, int]]:
    """`state` (a model trained with vocabulary `old`) with its two vocabulary tables, the node-type
    and subtoken embeddings (each both an input and, tied, an output matrix), re-indexed to `new` by
    name, so that a run on a dataset built with another vocabulary (a larger corpus) can start from
    it.  A name `old` lacks starts at the mean of the ordinary rows: a neutral input, and as an output
    an average score rather than a random one.  Returns the new state and how many names were new."""
    out, added = dict(state), []
    for key, was, now, specials in (("type_emb.weight", old.node_types, new.node_types, len(NODE_SPECIALS)),
                                    ("sub_emb.weight", old.subtokens, new.subtokens, len(SUBTOKEN_SPECIALS))):
        w = state[key]
        index = {n: i for i, n in enumerate(was)}
        fill = w[specials:].mean(0)
        out[key] = torch.stack([w[index[n]] if n in index else fill for n in now])
        added.append(sum(n not in index for n in now))
    return out, (added[0], added[1])


def _grow_transformer(model: SLM, state: dict) -> None:
    """Make a wider or deeper transformer compute what `state`'s did (function preserving growth).

    Without this, the fresh feed-forward units and layers added by a partial init scramble the
    start weights' output: config large from model/shipped started at a dev nll of 5.6 per target
    against 2.1 for the same wiring at the old size (0.72 in the paper's wiring), on 64 dev examples.
    A wider feed-forward: the fresh hidden units' output weights (linear2's new columns) start at
    zero.  More layers (post-LN, as nn.TransformerEncoderLayer): each new layer's residual branches
    (attention output projection, linear2) start at zero, so it maps x to norm2(norm1(x)); the last
    old layer's final LayerNorm affine moves to the last new layer's norm2 and every LayerNorm in
    between is plain (1, 0): standardized vectors pass through them unchanged."""
    layers = model.transformer.layers
    old = sorted({int(k.split(".")[2]) for k in state if k.startswith("transformer.layers.")})
    if not old:
        return
    n_old = old[-1] + 1
    with torch.no_grad():
        for i, layer in enumerate(list(layers)[:n_old]):
            w = state.get(f"transformer.layers.{i}.linear2.weight")
            if w is not None and w.shape[1] < layer.linear2.weight.shape[1]:
                layer.linear2.weight[:, w.shape[1]:] = 0
        if len(layers) <= n_old or getattr(layers[0], "norm_first", False):
            return
        last = layers[n_old - 1].norm2
        gamma, beta = last.weight.detach().clone(), last.bias.detach().clone()
        last.weight.fill_(1.0)
        last.bias.zero_()
        for layer in list(layers)[n_old:]:
            for lin in (layer.self_attn.out_proj, layer.linear2):
                lin.weight.zero_()
                lin.bias.zero_()
            for norm in (layer.norm1, layer.norm2):
                norm.weight.fill_(1.0)
                norm.bias.zero_()
        layers[-1].norm2.weight.copy_(gamma)
        layers[-1].norm2.bias.copy_(beta)


def rng_state(device: torch.device) -> dict:
    out = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(s: dict, device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)


# ---------------------------------------------------------------- dev checks


@torch.no_grad()
def dev_loss(model, dev_batches: list, device, amp) -> float:
    model.eval()
    nll, n = 0.0, 0
    for b in dev_batches:
        with amp():
            _, st = loss_fn(b)(model, b.to(device))
        nll += float(st["nll_sum"])
        n += b.n_targets
    model.train()
    return nll / max(n, 1)


def loss_fn(b):
    """The loss of a batch of either kind: packed (model/steps.py) or featurized (model/batching.py)."""
    from anycode.model import packed, steps
    return steps.batch_loss if isinstance(b, (packed.FastBatch, packed.PinnedBatch, packed.DeviceBatch)) \
        else batching.batch_loss


def dev_accuracy(model, vocab, dev_examples, cfg: TrainConfig, grammar_table) -> float:
    model.eval()
    preds = evaluate.decode(model, vocab, dev_examples, beam=1, table=grammar_table,
                            max_paths=cfg.max_paths, max_length=cfg.max_length, lang=dev_examples[0][0].lang)
    model.train()
    ok = sum(evaluate.same_code(p[0].code, evaluate.truth_code(t, h)) if p else False
             for p, (t, h) in zip(preds, dev_examples))
    return ok / max(len(dev_examples), 1)


# ---------------------------------------------------------------- training


def _start_from(model: SLM, init: Path, vocab: Vocab, data: Path, log) -> None:
    """A new run's start weights: `init`'s, re-indexed by name when its vocabulary differs."""
    start, init_vocab, _ = load_model(init)
    theirs = start.state_dict()
    if init_vocab.node_types != vocab.node_types or init_vocab.subtokens != vocab.subtokens:
        theirs, added = remap_vocab(theirs, init_vocab, vocab)
        log(f"{init} has another vocabulary than {data}: its embedding rows re-indexed by name; "
            f"{added[0]} node types and {added[1]} subtokens new (started at the mean of the known rows)")
    fresh = init_from(model, theirs)
    # a model with file tokens may start from one without: W_f starts as the whole-token copy matrix
    if "W_f" in fresh:
        with torch.no_grad():
            model.W_f.copy_(model.W_c[0])
    partial = [k for k in model.state_dict() if k in theirs and theirs[k].shape != model.state_dict()[k].shape]
    log(f"initialised from the weights in {init}; fresh: {len(fresh)} tensors "
        f"({', '.join(sorted({k.rsplit('.', 1)[0] for k in fresh})[:6])}...), partly: {len(partial)}")


def _train_examples(data: Path, cfg: TrainConfig, vocab: Vocab, feat_dir: Path, log):
    """The train split: packed features (built in `feat_dir` when missing) or the shards themselves."""
    if not shard_paths(data, "train"):
        raise ShardError(f"{data / 'train'}: no train shards (a dataset is built by `anycode dataset build`; "
                         f"tools/device/featurize.py moves to train_left the shards it could not featurize "
                         f"within --seconds: give it more)")
    if not cfg.packed:
        return Examples(data, "train")
    from anycode.model import packed
    t0 = time.time()
    folder = packed.build(data, "train", feat_dir, vocab, cfg.max_paths, cfg.max_length, cfg.file_tokens,
                          jobs=max(1, (os.cpu_count() or 2) - 1) if cfg.workers != 0 else 1, log=log)
    log(f"features: {folder} ready in {time.time() - t0:.0f}s")
    return PackedExamples(packed.PackedSplit(folder))


def _dev_sample(data: Path, cfg: TrainConfig, vocab: Vocab) -> tuple[list, list]:
    """A fixed sample of the dev split: batches for the loss and examples for greedy acc@1."""
    if not shard_paths(data, "dev"):
        return [], []
    dev_ex = Examples(data, "dev")
    pick = np.random.default_rng(cfg.seed + 1).permutation(len(dev_ex))
    loss_ids = [int(i) for i in pick[: cfg.dev_loss_examples]]
    batches = []
    if cfg.packed:
        from anycode.model import packed
        for k in range(0, len(loss_ids), 256):
            batches.append(packed.collate_examples(
                [batching.featurize(*dev_ex.example(i), vocab, cfg.max_paths, cfg.max_length, cfg.file_tokens)
                 for i in loss_ids[k: k + 256]], cfg.max_length, paper=not cfg.context_once))
    else:
        for k in range(0, len(loss_ids), 32):
            batches.append(batching.make_batch([dev_ex.example(i) for i in loss_ids[k: k + 32]], vocab,
                                               cfg.max_paths, cfg.max_length, cfg.context_once, cfg.file_tokens))
    return batches, [dev_ex.example(int(i)) for i in pick[: cfg.eval_examples]]


class _Window:
    """The running sums of one log window; read (one host sync) only when the window closes."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.nll, self.n, self.vnll, self.vn, self.examples, self.steps, self.wait = 0.0, 0, 0.0, 0, 0, 0, 0.0
        self.t0 = time.time()

    def add(self, batch, b, stats) -> None:
        self.nll += stats["nll_sum"]
        self.n += batch.n_targets
        self.vnll += stats["value_nll_sum"]
        self.vn += stats["value_targets"] if "value_targets" in stats else int(batch.n_value_targets)
        self.examples += b.n_examples
        self.steps += 1

    def record(self, step: int, lr: float, epoch: int) -> tuple[dict, float]:
        nll, vnll = float(self.nll), float(self.vnll)
        dt = time.time() - self.t0
        return {"step": step, "loss": nll / self.n, "node_loss": (nll - vnll) / max(self.n - self.vn, 1),
                "value_loss": vnll / max(self.vn, 1), "lr": lr, "targets_per_s": self.n / dt,
                "examples_per_s": self.examples / dt, "steps_per_s": self.steps / dt,
                "data_wait_share": self.wait / dt, "epoch": epoch}, dt


class _Run:
    """What a run holds between steps (model, optimizer, schedule, counters), saved whole in ckpt.pt."""

    def __init__(self, out: Path, cfg: TrainConfig, mcfg: SLMConfig, dev: torch.device, ckpt: dict | None, log):
        self.out, self.cfg, self.mcfg, self.dev = out, cfg, mcfg, dev
        self.model = SLM(mcfg).to(dev)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=dev.type == "cuda")
        decay = lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)) * cfg.lr_decay ** (s // cfg.lr_decay_every)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, decay)
        self.resumed = ckpt is not None
        self.st = {"step": 0, "pos": 0, "train_seconds": 0.0, "targets": 0, "examples": 0, "best_dev_acc": -1.0,
                   "best_score": -math.inf, "best_step": -1, "history": []}
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optim"])
            self.sched.load_state_dict(ckpt["sched"])
            self.st.update(ckpt["state"])
            if "best_score" not in ckpt["state"] and self.st["best_dev_acc"] >= 0:  # older than best_score
                self.st["best_score"] = self.st["best_dev_acc"]
            set_rng_state(ckpt["rng"], dev)
            log(f"resumed from {out / 'ckpt.pt'} at step {self.st['step']} (data position {self.st['pos']})")
        self.amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else \
            (lambda: torch.autocast("cpu", enabled=False))

    def step(self, batch, b):
        with self.amp():
            loss, stats = loss_fn(batch)(self.model, b)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        st = self.st
        st["step"] += 1
        st["pos"] += 1
        st["targets"] += batch.n_targets
        st["examples"] += b.n_examples
        return loss.detach(), stats

    def save_checkpoint(self) -> None:
        tmp = self.out / "ckpt.pt.tmp"
        torch.save({"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                    "sched": self.sched.state_dict(), "state": self.st, "rng": rng_state(self.dev),
                    "config": asdict(self.cfg), "model_config": asdict(self.mcfg)}, tmp)
        os.replace(tmp, self.out / "ckpt.pt")

    def evaluate(self, vocab, dev_batches, dev_examples, grammar_table, log) -> float:
        """Dev loss and greedy acc@1, logged; keeps best.pt (by acc@1, or by dev nll without it)."""
        t0 = time.time()
        model, st = self.model, self.st
        dl = dev_loss(model, dev_batches, self.dev, self.amp) if dev_batches else float("nan")
        acc = dev_accuracy(model, vocab, dev_examples, self.cfg, grammar_table) if dev_examples else float("nan")
        rec = {"step": st["step"], "dev_nll": dl, "dev_greedy_acc1": acc, "eval_seconds": time.time() - t0}
        st["history"].append(rec)
        log(f"dev step {st['step']}: nll/target {dl:.4f}, greedy acc@1 {acc * 100:.2f}% "
            f"({len(dev_examples)} examples, {rec['eval_seconds']:.1f}s)")
        with open(self.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps({"dev": rec}) + "\n")
        score = acc if acc == acc else -dl
        if score > st["best_score"]:
            st["best_score"], st["best_step"] = score, st["step"]
            if acc == acc:
                st["best_dev_acc"] = acc
            torch.save(model.state_dict(), self.out / "best.pt.tmp")
            os.replace(self.out / "best.pt.tmp", self.out / "best.pt")
        return time.time() - t0


def _open_run(data: Path, out: Path, cfg: TrainConfig, dev: torch.device, vocab: Vocab, init, log) -> _Run:
    """A run resumed from out/ckpt.pt (with its own configuration), else a new one from `init` or scratch."""
    ckpt_path = out / "ckpt.pt"
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is None and (out / "log.jsonl").exists() and (out / "log.jsonl").stat().st_size:
        raise SystemExit(f"error: {out} holds a training log but no checkpoint ({ckpt_path} is missing: not "
                         f"carried, or not joined?); refusing to start over from scratch there. Bring the "
                         f"checkpoint back, or train into a new directory")
    if ckpt is not None:
        # a resumed run keeps its configuration; runs older than `packed` used it for context_once only
        cfg = TrainConfig(**{"packed": ckpt["config"].get("context_once", False), **ckpt["config"]})
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        # cuDNN attention builds a plan for every new (batch, set size) shape: seconds lost per batch here
        torch.backends.cuda.enable_cudnn_sdp(False)
        if cfg.compile and cfg.packed and not cfg.context_once:
            from anycode.model import steps
            steps.compile_set_transformer()
    run = _Run(out, cfg, model_config(cfg, vocab), dev, ckpt, log)
    del ckpt
    if not run.resumed:
        if init is not None:
            _start_from(run.model, Path(init), vocab, data, log)
            run.st["init"] = str(init)
        vocab.save(out / "vocab.json")
        if (data / "grammar.json").exists():
            shutil.copy(data / "grammar.json", out / "grammar.json")
    save_json(out / "config.json", run_config(run.cfg, run.mcfg, data_language(data).id))
    log(f"model: {run.model.num_parameters() / 1e6:.2f}M parameters on {dev}; config {asdict(run.cfg)}")
    return run


def train(data: Path, out: Path, cfg: TrainConfig, minutes: float | None = None, max_steps: int | None = None,
          device: str = "auto", log=print, init: Path | None = None, features: Path | None = None) -> dict:
    """Train (or resume) into `out`; returns a summary with the losses of the steps run here.

    `init`: a new run starts from these weights (a run or shipped directory, see `load_model`)
    with a fresh optimizer; ignored when `out` holds a checkpoint to resume.  `features`: where the
    packed features live (packed runs; default out/features), built there when missing."""
    t_start = time.time()
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    vocab = Vocab.load(data / "vocab.json")
    run = _open_run(data, out, cfg, dev, vocab, init, log)
    cfg, st = run.cfg, run.st

    train_ex = _train_examples(data, cfg, vocab, Path(features) if features is not None else out / "features", log)
    stream = BatchStream(train_ex, vocab, cfg)
    log(f"train: {len(train_ex)} examples, {int(train_ex.counts.sum())} targets (upper bound) in "
        f"{len(train_ex.files)} shards; about {len(stream.plan(0))} batches an epoch")
    dev_batches, dev_examples = _dev_sample(data, cfg, vocab)
    grammar_table = None
    if (data / "grammar.json").exists():
        from anycode.model.grammar_table import GrammarTable
        grammar_table = GrammarTable.load(data / "grammar.json")
    evaluate_now = lambda: run.evaluate(vocab, dev_batches, dev_examples, grammar_table, log)

    workers = cfg.workers if cfg.workers >= 0 else max(0, (os.cpu_count() or 2) - 2)
    loader = iter(make_loader(stream, st["pos"], workers, pin=dev.type == "cuda"))
    run.model.train()
    losses: list = []              # tensors: read at the end, no sync a step
    last_ckpt, win = time.time(), _Window()
    budget = None if minutes is None else minutes * 60.0
    step_seconds, eval_seconds, stop_reason = 0.0, 0.0, "max steps"
    while max_steps is None or st["step"] < max_steps:
        if budget is not None and time.time() - t_start + max(3 * step_seconds, 5.0) + 15.0 > budget:
            stop_reason = "time limit"
            break
        t_wait = time.time()
        batch = next(loader)
        b = batch.to(dev)
        win.wait += time.time() - t_wait
        t0 = time.time()
        loss, stats = run.step(batch, b)
        losses.append(loss)
        win.add(batch, b, stats)
        step_seconds = 0.9 * step_seconds + 0.1 * (time.time() - t0) if step_seconds else time.time() - t0
        if st["step"] % cfg.log_every == 0:
            rec, dt = win.record(st["step"], run.sched.get_last_lr()[0], stream.locate(st["pos"])[0])
            st["train_seconds"] += dt
            log(f"step {rec['step']:6d} ep {rec['epoch']} loss {rec['loss']:.4f} (node {rec['node_loss']:.3f} "
                f"value {rec['value_loss']:.3f}) lr {rec['lr']:.2e} | {rec['targets_per_s']:.0f} targets/s "
                f"{rec['examples_per_s']:.0f} ex/s {rec['steps_per_s']:.1f} steps/s wait {rec['data_wait_share']:.0%}")
            with open(out / "log.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            win.reset()
        if st["step"] % cfg.eval_every == 0:
            left = None if budget is None else budget - (time.time() - t_start)
            if left is None or left > 2 * eval_seconds + 30:
                eval_seconds = evaluate_now()
                win.t0 += eval_seconds
        if time.time() - last_ckpt > cfg.ckpt_minutes * 60:
            run.save_checkpoint()
            last_ckpt = time.time()
            win.reset()   # keep throughput numbers clean of checkpoint time
    if win.steps:
        st["train_seconds"] += time.time() - win.t0
    if (dev_examples or dev_batches) and (not st["history"] or st["history"][-1]["step"] != st["step"]) \
            and st["step"] > 0:
        if budget is None or budget - (time.time() - t_start) > eval_seconds + 10:
            evaluate_now()
    run.save_checkpoint()
    log(f"stopped ({stop_reason}) at step {st['step']}; checkpoint {out / 'ckpt.pt'}; "
        f"{time.time() - t_start:.0f}s in this call")
    return {"losses": [float(x) for x in losses], "step": st["step"], "state": st}


# ---------------------------------------------------------------- command line


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=Path("data/dataset/python"))
    ap.add_argument("--out", type=Path, default=Path("runs/slm"))
    ap.add_argument("--config", default="paper", choices=sorted(CONFIGS))
    ap.add_argument("--minutes", type=float, default=None, help="stop cleanly, with a checkpoint, before this")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--init", type=Path, default=None,
                    help="start a new run from these weights (a run or model directory), with a fresh optimizer")
    ap.add_argument("--set", nargs="*", default=[], action="extend", metavar="KEY=VALUE",
                    help="override config fields (repeatable: a later value wins)")
    ap.add_argument("--features", type=Path, default=None,
                    help="the packed features of packed runs (built there when missing; default RUN/features)")


def parse_overrides(cfg: TrainConfig, pairs: list[str]) -> TrainConfig:
    types = {f.name: f.type for f in fields(TrainConfig)}
    kw = {}
    for p in pairs:
        k, v = p.split("=", 1)
        if k not in types:
            raise SystemExit(f"unknown config field {k}")
        cur = getattr(cfg, k)
        if isinstance(cur, bool):
            if v.lower() not in ("true", "false", "1", "0"):
                raise SystemExit(f"{k} takes true or false, not {v!r}")
            kw[k] = v.lower() in ("true", "1")
        else:
            kw[k] = type(cur)(v)
    return replace(cfg, **kw)


def run(args) -> int:
    cfg = parse_overrides(CONFIGS[args.config], args.set)

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    train(args.data, args.out, cfg, minutes=args.minutes, max_steps=args.max_steps, device=args.device, log=log,
          init=args.init, features=args.features)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m anycode.model.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parser(parser)
    sys.exit(run(parser.parse_args()))
