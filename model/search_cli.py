"""`anycode search-data build|pack`: code-search pairs from the corpus (model/search_data.py), then
the arrays the encoders train on (model/search_pack.py)."""
from __future__ import annotations

import argparse


def add_parser(ap: argparse.ArgumentParser) -> None:
    from anycode.model import search_data, search_pack

    sub = ap.add_subparsers(dest="action", required=True)
    search_data.add_arguments(sub.add_parser("build", help="pairs and their features, per corpus split"))
    search_pack.add_arguments(sub.add_parser("pack", help="vocabularies and fixed arrays for training"))


def run(args) -> int:
    from anycode.model import search_data, search_pack

    return (search_data if args.action == "build" else search_pack).run(args)
