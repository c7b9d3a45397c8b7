"""`anycode fim tokenizer|pack|train|eval`: the fill-in-the-middle baseline (issue 21): its tokenizer
(model/fim_tokenizer.py), the corpus packed for training (model/fim_data.py), training
(model/fim_train.py) and evaluation on the SLM's test holes (model/fim_eval.py)."""
from __future__ import annotations

import argparse
import importlib

ACTIONS = {
    "tokenizer": ("anycode.model.fim_tokenizer", "learn the byte-level BPE tokenizer from the train split"),
    "pack": ("anycode.model.fim_data", "the corpus splits as byte arrays (and xz pieces for a device call)"),
    "train": ("anycode.model.fim_train", "train or resume a run, for a bounded time"),
    "export": ("anycode.model.baseline_export", "the model as ONNX graphs `anycode serve --model fim` runs"),
    "eval": ("anycode.model.fim_eval", "beam search on `anycode eval`'s holes, judged by its code"),
}


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(kind="fim")
    sub = ap.add_subparsers(dest="action", required=True)
    for name, (module, help_) in ACTIONS.items():
        importlib.import_module(module).add_parser(sub.add_parser(name, help=help_))


def run(args) -> int:
    return importlib.import_module(ACTIONS[args.action][0]).run(args)
