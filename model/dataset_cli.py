"""`anycode dataset build|stats`: the dataset's command, over model/dataset.py (building
the shards) and model/data_stats.py (measuring them, which reads shards through dataset.py)."""
from __future__ import annotations

import argparse


def add_parser(ap: argparse.ArgumentParser) -> None:
    from anycode.model import data_stats, dataset
    sub = ap.add_subparsers(dest="action", required=True)
    dataset.add_parser(sub.add_parser("build", help="extract examples from the corpus into shards"))
    data_stats.add_parser(sub.add_parser("stats", help="measure the built dataset (the figures of docs/data.md)"))


def run(args) -> int:
    if args.action == "stats":
        from anycode.model.data_stats import run_stats
        return run_stats(args)
    from anycode.model.dataset import run as build
    return build(args)
