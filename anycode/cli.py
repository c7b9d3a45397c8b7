"""The `anycode` command.  Each subcommand lives in its own module and registers
itself through `add_parser(subparsers)`; modules are imported lazily so that
`anycode serve` never imports training code."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module that defines add_parser(sub) and run(args)
COMMANDS = {
    "serve": "anycode.server.cli",
    "complete": "anycode.model.cli_complete",
    "corpus": "anycode.model.corpus",
    "dataset": "anycode.model.dataset_cli",
    "train": "anycode.model.train",
    "eval": "anycode.model.evaluate",
    "export": "anycode.model.export",
    "search-data": "anycode.model.search_cli",
    "search": "anycode.model.search_index",
    "fim": "anycode.model.fim_cli",
    "s2s": "anycode.model.s2s_cli",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="anycode", description=__doc__)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        sub.add_parser(name, help=f"see `anycode {name} --help`", add_help=False)
    if not argv or argv[0] not in COMMANDS:
        ap.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    cmd = argparse.ArgumentParser(prog=f"anycode {argv[0]}")
    module.add_parser(cmd)
    args = cmd.parse_args(argv[1:])
    return int(module.run(args) or 0)
