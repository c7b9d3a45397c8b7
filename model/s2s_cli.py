"""`anycode s2s pack|train|eval`: the seq2seq baseline with a copy mechanism (issue 21): the SLM
dataset's holes as token sequences (model/s2s_data.py), training (model/s2s_train.py, fim_train's
loop) and evaluation on `anycode eval`'s test holes (model/s2s_eval.py, fim_eval's search and judging)."""
from __future__ import annotations

import argparse
import importlib

ACTIONS = {
    "pack": ("anycode.model.s2s_data", "the dataset's holes as token sequences (and xz pieces for a device call)"),
    "train": ("anycode.model.s2s_train", "train or resume a run, for a bounded time"),
    "export": ("anycode.model.baseline_export", "the model as ONNX graphs `anycode serve --model s2s` runs"),
    "eval": ("anycode.model.s2s_eval", "beam search on `anycode eval`'s holes, judged by its code"),
}


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(kind="s2s")
    sub = ap.add_subparsers(dest="action", required=True)
    for name, (module, help_) in ACTIONS.items():
        importlib.import_module(module).add_parser(sub.add_parser(name, help=help_))


def run(args) -> int:
    return importlib.import_module(ACTIONS[args.action][0]).run(args)
