"""Train the seq2seq baseline (model/s2s.py) on the packed holes (model/s2s_data.py).

    anycode s2s train --data data/s2s/LANG --out runs/s2s --config base --minutes 9 [--set lr=5e-4]
                      [--device cuda] [--workers 12] [--compile]

DATA holds vocab.json and train.s2s.npz / dev.s2s.npz (`anycode s2s pack`).  The loop is
model/fim_train.py's (time-bounded calls that resume at their step, AdamW with warmup and a cosine
decay over the planned time, bf16 autocast on CUDA, clipping 1.0, dev loss and best.pt, log.jsonl
with tokens, targets and examples per second); `S2STask` says what it trains: the model from the
preset, batches of examples (source and target pieces, padded), the loss per target piece.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from anycode.model import fim_train
from anycode.model.s2s import S2SConfig, S2SModel
from anycode.model.s2s_data import PAD, S2SExamples, collate

# the model (d, n_head, d_ff, layers, lengths) and how it is trained; vocab comes from the data
CONFIGS = {
    "tiny": dict(d=32, n_head=2, d_ff=64, enc_layers=1, dec_layers=1, batch=16, lr=3e-3, warmup=2,
                 eval_every=1e9, ckpt_every=1e9, log_every=0.0, dev_rows=32),
    # the paper's Transformer-small widths (d 256, d_ff 1024, 4 heads), about the SLM's 9.0M parameters
    "base": dict(d=256, n_head=4, d_ff=1024, enc_layers=4, dec_layers=4, batch=256, lr=5e-4, warmup=500,
                 eval_every=60.0, ckpt_every=120.0, log_every=10.0, dev_rows=4096),
}
DEFAULTS = dict(max_src=256, max_tgt=64, dropout=0.1, weight_decay=0.01, seed=0)
MODEL_KEYS = ("d", "n_head", "d_ff", "enc_layers", "dec_layers", "max_src", "max_tgt", "dropout")


class S2STask(fim_train.FimTask):
    """model/fim_train.py's loop training the seq2seq baseline (see `FimTask`)."""
    CONFIGS, DEFAULTS, MODEL_KEYS = CONFIGS, DEFAULTS, MODEL_KEYS
    carried = ("vocab.json",)

    def __init__(self, data: Path):
        self.data = Path(data)
        self.vocab = len(json.loads((self.data / "vocab.json").read_text()))

    def model(self, s: dict) -> S2SModel:
        return S2SModel(S2SConfig(vocab=self.vocab, **{k: s[k] for k in MODEL_KEYS}))

    def examples(self, split: str, s: dict, seed: int) -> S2SExamples:
        return S2SExamples(self.data, split, self.vocab, s["max_src"], s["max_tgt"] - 1, seed=seed, batch=s["batch"])

    @staticmethod
    def collate(rows: list) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(x) for x in collate(rows))

    @staticmethod
    def to(batch: tuple, device: str) -> tuple:
        return tuple(x.to(device, non_blocking=True) for x in batch)

    @staticmethod
    def loss(model: S2SModel, batch: tuple) -> torch.Tensor:
        return model.loss(*batch)

    @staticmethod
    def counts(batch: tuple) -> tuple[int, int]:
        """(source and target pieces, target pieces with EOS) of a batch, padding not counted."""
        src, _, tout = batch
        targets = int((tout != PAD).sum())
        return int((src != PAD).sum()) + targets, targets


def add_parser(ap: argparse.ArgumentParser) -> None:
    fim_train.add_parser(ap, S2STask, "data/s2s")


def run(args) -> int:
    return fim_train.run(args)
