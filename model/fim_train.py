"""Train the fill-in-the-middle baseline (model/fim.py) on packed corpus splits (model/fim_data.py).

    anycode fim train --data data/fim/LANG --out runs/fim --config base --minutes 9 [--set lr=6e-4]
                      [--device cuda] [--workers 12] [--compile]

DATA holds tokenizer.json (`anycode fim tokenizer`) and train.bin.npy / dev.bin.npy with their
.idx.npy (`anycode fim pack`).  AdamW, linear warmup then a cosine decay to a tenth over the planned
time (model/search_train.py's `lr_at`), bf16 autocast on CUDA, gradient clipping 1.0.  A run is
resumable and time-bounded: every `ckpt_every` seconds and at the end OUT/ckpt.pt holds the weights,
the optimizer and the state (step, which is the data position: sequence k of the run is drawn from a
generator seeded by k; the time trained; the planned time, the first call's `--minutes` unless
`--plan-minutes` says how long the whole run is meant to be).  A second call continues at the same step.
Every `eval_every` seconds the loss on fixed dev sequences is measured; the best weights so far are
OUT/best.pt.  OUT/log.jsonl has one line per log window: step, loss, lr, tokens, targets and examples
per second, the share of time waiting for data.  The loop is shared with the seq2seq baseline
(model/s2s_train.py): what is trained on what is a task (`FimTask` here).  tools/device/weights.py
brings a run's weights back from a device call as it does the SLM's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anycode import grammars
from anycode.model.fim import FimConfig, FimModel
from anycode.model.fim_data import FimExamples, FimSettings
from anycode.model.fim_tokenizer import PAD, load as load_tokenizer
from anycode.model.search_train import autocast, lr_at

# the model (n_layer, n_head, d, block) and how it is trained; vocab comes from the tokenizer
CONFIGS = {
    "tiny": dict(n_layer=2, n_head=2, d=32, block=64, max_middle=32, batch=8, lr=1e-2, warmup=2,
                 eval_every=1e9, ckpt_every=1e9, log_every=0.0, dev_rows=16),
    # about the SLM's parameter count
    "base": dict(n_layer=6, n_head=8, d=256, block=1024, max_middle=1024, batch=64, lr=1e-3, warmup=300,
                 eval_every=60.0, ckpt_every=120.0, log_every=10.0, dev_rows=256),
    # about four times base
    "large": dict(n_layer=9, n_head=8, d=512, block=1024, max_middle=1024, batch=64, lr=6e-4, warmup=300,
                  eval_every=60.0, ckpt_every=120.0, log_every=10.0, dev_rows=256),
}
DEFAULTS = dict(dropout=0.0, fim_rate=0.9, spm_rate=0.5, weight_decay=0.1, seed=0)
MODEL_KEYS = ("n_layer", "n_head", "d", "block", "dropout")
DATA_KEYS = ("block", "fim_rate", "spm_rate", "max_middle")


def make_settings(preset: str, overrides: dict, task=None) -> dict:
    """The preset's settings with DEFAULTS under them and --set overrides over them."""
    task = task or FimTask
    return {**task.DEFAULTS, **task.CONFIGS[preset], **overrides}


class FimTask:
    """What the loop below needs of a model and its data, here the FIM model's; the seq2seq baseline
    (model/s2s_train.py) brings its own, so that both train in one loop: the presets, the model built
    from settings, the examples of a split (example k fixed by the seed, so the step is the data
    position), how a list of examples becomes a batch, the loss, and what a batch counts."""
    CONFIGS, DEFAULTS, MODEL_KEYS = CONFIGS, DEFAULTS, MODEL_KEYS
    carried = ("tokenizer.json",)          # files of DATA the run folder keeps

    def __init__(self, data: Path):
        self.data = Path(data)
        self.tok = load_tokenizer(self.data / "tokenizer.json")

    def model(self, s: dict) -> FimModel:
        return FimModel(FimConfig(vocab=self.tok.get_vocab_size(), **{k: s[k] for k in MODEL_KEYS}))

    def examples(self, split: str, s: dict, seed: int) -> FimExamples:
        return FimExamples(self.data, split, self.tok, FimSettings(**{k: s[k] for k in DATA_KEYS}), seed=seed)

    @staticmethod
    def collate(rows: list) -> torch.Tensor:
        return torch.from_numpy(np.stack(rows))

    @staticmethod
    def to(batch: torch.Tensor, device: str) -> torch.Tensor:
        return batch.to(device, non_blocking=True)

    @staticmethod
    def loss(model: FimModel, rows: torch.Tensor) -> torch.Tensor:
        return model.loss(rows[:, :-1], rows[:, 1:])

    @staticmethod
    def counts(rows: torch.Tensor) -> tuple[int, int]:
        """(input tokens, target tokens that are not padding) of a batch, on the CPU."""
        return rows.shape[0] * (rows.shape[1] - 1), int((rows[:, 1:] != PAD).sum())


def batches(task, examples, batch: int, start: int, workers: int):
    """The run's batches from step `start` on: batch s holds examples s * batch ... (s + 1) * batch - 1."""
    loader = torch.utils.data.DataLoader(
        examples, batch_size=batch, sampler=range(start * batch, 1 << 50), num_workers=workers,
        collate_fn=task.collate, pin_memory=torch.cuda.is_available(), prefetch_factor=4 if workers else None,
        persistent_workers=False)
    return iter(loader)


@torch.no_grad()
def dev_loss(task, model, dev: list) -> float:
    """Mean loss per target token over the fixed dev batches."""
    model.eval()
    total, count = 0.0, 0
    for b in dev:
        with autocast(task.device_type):
            loss = task.loss(model, b)
        n = task.counts(b)[1]
        total, count = total + loss.item() * n, count + n
    model.train()
    return total / max(count, 1)


def dev_batches(task, s: dict, device: str) -> list:
    """The fixed dev examples (the first `dev_rows` of the dev split's draw), in batches, on the device."""
    dev_set = task.examples("dev", s, s["seed"] + 1)
    rows = [dev_set[k] for k in range(s["dev_rows"])]
    return [task.to(task.collate(rows[i: i + s["batch"]]), device) for i in range(0, len(rows), s["batch"])]


class Run:
    """A run's model, optimizer and state, fresh or resumed from OUT/ckpt.pt."""

    def __init__(self, out: Path, settings: dict, task, device: str, planned_s: float, init: Path | None = None):
        self.out, self.task = out, task
        ckpt = out / "ckpt.pt"
        blob = torch.load(ckpt, map_location=device, weights_only=False) if ckpt.exists() else None
        if blob is not None:
            settings = blob["train"]          # a resumed run keeps its first call's settings
        self.settings = settings
        torch.manual_seed(settings["seed"])
        self.model = task.model(settings).to(device)
        self.cfg = self.model.cfg
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=settings["lr"], betas=(0.9, 0.95),
                                     weight_decay=settings["weight_decay"], fused=device.startswith("cuda"))
        self.state = {"step": 0, "trained_s": 0.0, "planned_s": planned_s, "tokens": 0, "best_dev": None,
                      "history": []}
        if blob is not None:
            self.model.load_state_dict(blob["model"])
            self.opt.load_state_dict(blob["opt"])
            self.state = blob["state"]
        elif init is not None:
            self.start_from(init)

    def start_from(self, init: Path) -> None:
        """A new run that starts from another run's weights (a fresh optimizer and schedule): how a run
        goes on from the fp16 weights a device call brought back, when its checkpoint stayed there."""
        from anycode.model.checkpoint import baseline_state
        config, state = baseline_state(init)
        if config != self.cfg.to_dict():
            raise SystemExit(f"error: {init} holds a model of another shape ({config}) than this run's "
                             f"({self.cfg.to_dict()}): train it with the same --config and --set")
        self.model.load_state_dict({k: v.float() for k, v in state.items()})
        self.state["init"] = str(init)

    def save(self, name: str = "ckpt.pt") -> None:
        tmp = self.out / (name + ".tmp")
        torch.save({"config": self.cfg.to_dict(), "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                    "state": self.state, "train": self.settings}, tmp)
        tmp.replace(self.out / name)

    def check(self, dev: list, loss: float) -> None:
        """Dev loss; best.pt when it is the best so far; ckpt.pt."""
        d = dev_loss(self.task, self.model, dev)
        st = self.state
        st["history"].append([st["step"], round(st["trained_s"]), round(loss, 4), round(d, 4)])
        if st["best_dev"] is None or d < st["best_dev"]:
            st["best_dev"] = d
            torch.save({"config": self.cfg.to_dict(), "model": self.model.state_dict(),
                        "info": {"step": st["step"], "dev_loss": d}}, self.out / "best.pt")
        self.save()
        log(self.out, {"step": st["step"], "trained_s": round(st["trained_s"], 1), "dev_loss": round(d, 4)})


def log(out: Path, record: dict) -> None:
    print(json.dumps(record), file=sys.stderr, flush=True)
    with open(out / "log.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


def new_window() -> dict:
    """What a log line sums since the last one."""
    return {"tokens": 0, "targets": 0, "examples": 0, "wait": 0.0, "steps": 0, "loss": 0.0}


def log_window(out: Path, st: dict, lr: float, window: dict, span: float) -> None:
    """One log line: the step, the window's mean loss, the learning rate, tokens (inputs), targets
    (tokens that are not padding) and examples per second, and the share of the time spent waiting
    for data."""
    span = max(span, 1e-9)
    log(out, {"step": st["step"], "loss": round(float(window["loss"]) / max(window["steps"], 1), 4), "lr": lr,
              "tokens_per_s": round(window["tokens"] / span), "targets_per_s": round(window["targets"] / span),
              "examples_per_s": round(window["examples"] / span, 1), "data_wait": round(window["wait"] / span, 3)})


def train(args, task=None) -> dict:
    """Train (or resume) the run in args.out for at most args.minutes; returns its state.  `task`
    (default the FIM model's, `FimTask`) says what is trained on what."""
    task = task or FimTask(args.data)
    task.device_type = args.device.split(":")[0]
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, make_settings(args.config, args.overrides, task), task, args.device,
              60.0 * (args.plan_minutes or args.minutes), args.init)
    s, st, model = run.settings, run.state, run.model
    for name in task.carried:
        shutil.copy(Path(args.data) / name, args.out / name)
    (args.out / "config.json").write_text(json.dumps({"model": run.cfg.to_dict(), "train": s}, indent=1))
    dev = dev_batches(task, s, args.device)
    step_fn = torch.compile(task.loss) if args.compile else task.loss
    it = batches(task, task.examples("train", s, s["seed"]), s["batch"], st["step"], args.workers)
    log(args.out, {"start_step": st["step"], "params": model.num_params(), "config": args.config,
                   "device": args.device})
    t0 = tick = last_log = last_eval = last_ckpt = time.time()
    window, loss = new_window(), None
    while time.time() - t0 < args.minutes * 60 and (args.steps is None or st["step"] < args.steps):
        w0 = time.time()
        batch = next(it)
        window["wait"] += time.time() - w0
        tokens, targets = task.counts(batch)                       # on the CPU: no GPU sync a step
        batch = task.to(batch, args.device)
        for g in run.opt.param_groups:
            g["lr"] = lr_at(s, st["step"], st["trained_s"] / st["planned_s"])
        with autocast(task.device_type):
            loss = step_fn(model, batch)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        run.opt.step()
        st["step"] += 1
        st["tokens"] += tokens
        window["steps"] += 1
        window["tokens"] += tokens
        window["targets"] += targets
        window["examples"] += s["batch"]
        window["loss"] += loss.detach()
        now = time.time()
        st["trained_s"] += now - tick
        tick = now
        if now - last_log >= s["log_every"]:
            log_window(args.out, st, run.opt.param_groups[0]["lr"], window, now - last_log)
            window, last_log = new_window(), now
        if now - last_eval >= s["eval_every"]:
            run.check(dev, loss.item())
            last_eval = last_ckpt = tick = time.time()     # evaluation is not training time
        elif now - last_ckpt >= s["ckpt_every"]:
            run.save()
            last_ckpt = tick = time.time()
        if tick > now:                                     # after a check or a save: a new window
            window, last_log = new_window(), tick
    run.check(dev, loss.item() if loss is not None else float("nan"))
    return st


def parse_overrides(items: list[str], settings: dict) -> dict:
    """KEY=VALUE strings as settings, each of its key's type."""
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        if k not in settings:
            raise SystemExit(f"error: unknown setting {k!r}; known: {', '.join(sorted(settings))}")
        out[k] = type(settings[k])(float(v)) if isinstance(settings[k], (int, float)) else v
    return out


def add_parser(ap: argparse.ArgumentParser, task_cls=None, data: str = "data/fim") -> None:
    """The options of `anycode fim train` (and, with its task and data folder, `anycode s2s train`)."""
    task_cls = task_cls or FimTask
    ap.set_defaults(task_cls=task_cls)
    ap.add_argument("--data", type=Path, default=Path(data) / grammars.DEFAULT)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="base", choices=sorted(task_cls.CONFIGS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE over the preset")
    ap.add_argument("--minutes", type=float, required=True, help="this call's training time")
    ap.add_argument("--steps", type=int, default=None, help="stop at this step (the run's, not this call's)")
    ap.add_argument("--plan-minutes", type=float, default=None,
                    help="the whole run's training time, for the learning-rate schedule (default: --minutes)")
    ap.add_argument("--init", type=Path, default=None,
                    help="a new run starts from these weights (a run folder), with a fresh optimizer")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader processes drawing examples")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step")


def run(args) -> int:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")     # the loader's workers are forked
    task_cls = getattr(args, "task_cls", None) or FimTask
    args.overrides = parse_overrides(args.overrides, make_settings(args.config, {}, task_cls))
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    st = train(args, task_cls(args.data))
    print(f"step {st['step']}, {st['trained_s']:.0f}s trained, best dev loss {st['best_dev']}", file=sys.stderr)
    return 0

