"""Code search's speed and size against issue 23's targets, written to docs/bench.md (section `search`):

    python -m anycode.model.search_bench [--model DIR] [--corpus data/corpus/python/test] [--out docs/bench.md]

* indexing: the corpus's files through `search_index.refresh_file`, as the server and the command
  read them (parse, featurize, encode), until 10,000 functions are indexed: the wall time;
* size: that index repeated to 100,000 functions (each copy under other paths) and saved as the index
  file is saved: its bytes on disk;
* a query over those 100,000 functions with `search_index.ranker` (what the server keeps between
  queries): the query encoded, every function scored, the best 10; p50 and p95 of 100 queries.

The encoders are the shipped ones (`search_runtime.SHIPPED`) unless --model names an export.
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np

from anycode.model import search_index as si
from anycode.model.bench import write_report
from anycode.model.search_runtime import SHIPPED, SearchEncoders

QUERIES = ["read a json file", "send a request to a url", "parse command line arguments",
           "convert a date string to a datetime", "compute the mean of a list of numbers",
           "check whether a path is a directory", "sort a dictionary by value", "remove duplicates from a list",
           "connect to the database", "format a number as a percentage"]


def index_until(files: list[Path], encoders, functions: int) -> tuple[dict, float, int]:
    """The index of the first files holding `functions` functions; seconds taken, files read."""
    index, parsers, count, n = si.empty_index(), {}, 0, 0
    t0 = time.perf_counter()
    for n, f in enumerate(files, 1):
        si.refresh_file(index, f, parsers, encoders, log=lambda m: None)
        count += len(index["files"].get(str(f), {}).get("functions", []))
        if count >= functions:
            break
    return index, time.perf_counter() - t0, n


def repeated(index: dict, functions: int) -> dict:
    """`index` copied under other paths until it holds at least `functions` functions."""
    out, k = si.empty_index(), 0
    while sum(len(e["functions"]) for e in out["files"].values()) < functions:
        for path, entry in index["files"].items():
            out["files"][f"/copy{k}{path}"] = copy.deepcopy(entry)
        k += 1
    return out


def measure(model: Path, corpus: Path, functions: int = 10_000, total: int = 100_000) -> str:
    enc = SearchEncoders(model)
    files = si.source_files([corpus])
    index, secs, nfiles = index_until(files, enc, functions)
    indexed = sum(len(e["functions"]) for e in index["files"].values())
    big = repeated(index, total)
    n_big = sum(len(e["functions"]) for e in big["files"].values())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.json.gz"
        si.save_index(big, path)
        size = path.stat().st_size
        t = time.perf_counter()
        loaded = si.load_index(path)
        load_s = time.perf_counter() - t
    t = time.perf_counter()
    rank = si.ranker(loaded, enc)
    build_s = time.perf_counter() - t
    times = []
    for q in QUERIES * 10:
        t = time.perf_counter()
        rank(q, 10)
        times.append(time.perf_counter() - t)
    p50, p95 = (float(np.percentile(times, p)) * 1000 for p in (50, 95))
    cfg = enc.config
    return "\n".join([
        f"Encoders: `{model}` ({cfg.get('fusion')}, width {enc.width}, code read up to {enc.code_cap} subtokens), "
        f"ONNX Runtime on the CPU, one thread. `python -m anycode.model.search_bench --corpus {corpus}`.",
        "",
        "| what | measured | target |",
        "|---|---:|---:|",
        f"| indexing {indexed:,} functions ({nfiles} files: parse, featurize, encode) | {secs:.1f} s "
        f"({indexed / secs:.0f} functions/s) | 10,000 in 60 s |",
        f"| index of {n_big:,} functions on disk | {size / 1e6:.1f} MB | 100 MB |",
        f"| a query over {n_big:,} functions (encode, score, best 10) | p50 {p50:.1f} ms, p95 {p95:.1f} ms | p95 50 ms |",
        f"| that index read from disk, then its ranker built (once per change) | {load_s:.2f} s + {build_s:.2f} s | |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anycode.model.search_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=SHIPPED)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus/python/test"))
    ap.add_argument("--out", type=Path, help="markdown file whose `search` section is replaced")
    a = ap.parse_args(argv)
    if not (a.model / "config.json").exists():
        ap.error(f"no encoders in {a.model}: export some with python -m anycode.model.search_export")
    if not a.corpus.is_dir():
        ap.error(f"{a.corpus} is not a folder of source files (anycode corpus fetch makes data/corpus/LANG)")
    body = measure(a.model, a.corpus)
    print(body)
    if a.out:
        write_report(a.out, "### Code search (issue 23)\n\n" + body, section="search")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
