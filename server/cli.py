"""`anycode serve`: the language server over stdio (editors) or TCP (debugging)."""
from __future__ import annotations

import argparse
import logging
import sys


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.description = "Run the anycode language server (LSP over stdio by default)."
    ap.add_argument("--tcp", metavar="HOST:PORT",
                    help="listen on a TCP socket instead of stdio (one client, for debugging)")
    ap.add_argument("--stdio", action="store_true", help="use stdio (the default; accepted for clients that pass it)")
    ap.add_argument("--log-level", default="warning",
                    choices=["debug", "info", "warning", "error"],
                    help="level of the server's own log on stderr (default: warning)")
    defaults = ap.add_argument_group("setting defaults (the client's `anycode` settings override them)")
    defaults.add_argument("--model", help="slm (the default), or a baseline of issue 21: s2s or fim, its "
                                          "directory (`anycode s2s|fim export`) in --model-path")
    defaults.add_argument("--device", choices=["auto", "cpu", "cuda"])
    defaults.add_argument("--beam-size", type=int, dest="beamSize")
    defaults.add_argument("--max-items", type=int, dest="maxItems")
    defaults.add_argument("--time-budget-ms", type=int, dest="timeBudgetMs")
    defaults.add_argument("--model-path", dest="modelPath")
    defaults.add_argument("--threads", type=int)
    defaults.add_argument("--max-message-bytes", type=int, dest="maxMessageBytes",
                          help="larger messages are read through, dropped and answered with an error "
                               "(default 64 MiB)")
    ap.add_argument("--completer", help=argparse.SUPPRESS)  # module:factory, a testing hook


def parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    try:
        n = int(port)
    except ValueError:
        raise SystemExit(f"anycode serve: --tcp wants HOST:PORT, got {value!r}") from None
    if not 0 <= n < 65536:
        raise SystemExit(f"anycode serve: port out of range: {n}")
    return host.strip("[]") or "127.0.0.1", n


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":  # pygls logs every message it sends at INFO
        logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))
    from anycode.server import jsonrpc
    from anycode.server.lsp import load_factory, make_server

    from anycode.server import settings as settings_mod

    defaults = {k: getattr(args, k) for k in ("model", "device", "beamSize", "maxItems", "timeBudgetMs", "modelPath",
                                           "threads", "maxMessageBytes")
                if getattr(args, k) is not None}
    _, warnings = settings_mod.parse(defaults)
    for w in warnings:
        print(f"anycode serve: {w}", file=sys.stderr)
    factory = load_factory(args.completer) if args.completer else None
    server = make_server(factory, defaults)
    max_bytes = lambda: server.settings.maxMessageBytes  # noqa: E731 - the client may change it
    if args.tcp:
        host, port = parse_hostport(args.tcp)
        return jsonrpc.serve_tcp(server.protocol, host, port, max_bytes)
    return jsonrpc.serve_stdio(server.protocol, max_bytes)
