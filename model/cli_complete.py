"""`anycode complete FILE:LINE:COL`: ranked completions of the expression at a position.

    anycode complete examples/demo.py:4:11 [--beam 5] [--items 5] [--device auto] [--model DIR]

LINE and COL are 1-based; COL counts characters of the line (a cursor before
the COL-th character).  Prints each candidate with its probability, the range
it replaces, and the time taken (model load and the completion itself).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def parse_position(spec: str) -> tuple[Path, int, int]:
    try:
        name, line, col = spec.rsplit(":", 2)
        return Path(name), int(line), int(col)
    except ValueError:
        raise SystemExit(f"error: expected FILE:LINE:COL (1-based), got {spec!r}") from None


def byte_offset(source: bytes, line: int, col: int) -> int:
    """Byte offset of 1-based (line, character column) in `source`."""
    lines = source.split(b"\n")
    if not 1 <= line <= len(lines):
        raise ValueError(f"line {line} is outside the file ({len(lines)} lines)")
    text = lines[line - 1].decode("utf8", "replace")
    if not 1 <= col <= len(text) + 1:
        raise ValueError(f"column {col} is outside line {line} ({len(text)} characters)")
    return sum(len(x) + 1 for x in lines[: line - 1]) + len(text[: col - 1].encode("utf8"))


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("position", metavar="FILE:LINE:COL", help="1-based line and column")
    ap.add_argument("--beam", type=int, default=5, help="beam width")
    ap.add_argument("--items", type=int, default=5, help="candidates to print")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: automatic: on the CPU two for the score graph where there are two cores, one for the LSTM graphs)")
    ap.add_argument("--model", type=Path, default=None, help="exported model directory (default: the shipped one)")


def run(args) -> int:
    t0 = time.perf_counter()
    from anycode.model.runtime import Completer, ModelError

    path, line, col = parse_position(args.position)
    try:
        source = path.read_bytes()
        cursor = byte_offset(source, line, col)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        completer = Completer(args.model, device=args.device, threads=args.threads)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    items = completer.complete(source, cursor, uri=path.resolve().as_uri(), beam_size=args.beam,
                               max_items=args.items)
    t2 = time.perf_counter()
    where = f"{path}:{line}:{col}"
    if not items:
        print(f"{where}: no completion (no expression can go here, or none parsed)")
    else:
        typed = completer.last.get("typed", "")
        print(f"{where}: {len(items)} completion(s)" + (f" of {typed!r}" if typed else ""))
        for k, c in enumerate(items, 1):
            p = c.probability
            shown = f"{100 * p:6.2f}%" if p >= 1e-4 else f"{p:7.1e}"
            print(f"  {k}. {shown}  {c.text}")
    note = " (untrained weights)" if completer.manifest.get("untrained") else ""
    print(f"model {completer.model_dir} on {completer.device}{note}: loaded in {t1 - t0:.2f} s, "
          f"completion {1e3 * (t2 - t1):.0f} ms, "
          f"{completer.last.get('steps', 0)} beam steps")
    return 0
