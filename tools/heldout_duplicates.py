"""How many train functions and examples `anycode dataset build` drops as duplicates of dev or
test functions, without building the shards: the build's own extraction (`extract_file` with the
held-out `function_key`s) over every `--every`-th train file, so a sample when `--every` > 1.

    python tools/heldout_duplicates.py --corpus data/corpus/python --out data/dataset/python --every 1

`--out` only holds the cached held-out keys (heldout-functions.npz, as the build writes it).
`--held-out CORPUS` takes the held-out functions from another corpus's dev and test (a held-out list
of its own, such as the script-like test projects of model/corpora/python-scripts.tsv): how much of
it the train split holds copies of.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from anycode import grammars
from anycode.model import dataset
from anycode.model.workers import process_pool


class _Recording(frozenset):
    """The held-out keys, remembering which of them a train function matched."""
    def __new__(cls, keys):
        self = super().__new__(cls, keys)
        self.hits = set()
        return self

    def __contains__(self, key) -> bool:
        found = frozenset.__contains__(self, key)
        if found:
            self.hits.add(key)
        return found


def _count(root: str, names: list[str], lang_id: str, keys: frozenset[int]) -> dict:
    lang = grammars.get(lang_id)
    parser = lang.new_parser()
    sys.setrecursionlimit(10000)
    keys = _Recording(keys)
    out = {"files": 0, "functions": 0, "examples": 0, "dropped_functions": 0, "dropped_examples": 0,
           "by_project": Counter()}
    for n in names:
        res = dataset.extract_file(os.path.join(root, n), parser, n, lang=lang, drop_keys=keys)
        out["files"] += 1
        out["functions"] += len(res.functions)
        out["examples"] += sum(len(h) for _, h, _ in res.functions)
        dropped = res.skipped.get(dataset.HELD_OUT_DUPLICATE, 0)
        out["dropped_functions"] += dropped
        out["dropped_examples"] += res.duplicate_examples
        if dropped:
            out["by_project"][n.split("/", 1)[0]] += dropped
    out["hits"] = keys.hits
    return out


def _held_out_share(corpus_dir: Path, lang, hits: frozenset[int]) -> dict:
    """Of each held-out split, the functions and examples whose function a train function copies."""
    parser = lang.new_parser()
    out = {}
    for split in dataset.HELD_OUT:
        total = {"functions": 0, "examples": 0, "functions_in_train": 0, "examples_in_train": 0}
        for n in dataset.list_split_files(corpus_dir, split, lang):
            res = dataset.extract_file(os.path.join(corpus_dir, split, n), parser, n, lang=lang, drop_keys=hits)
            copied = res.skipped.get(dataset.HELD_OUT_DUPLICATE, 0)
            total["functions_in_train"] += copied
            total["examples_in_train"] += res.duplicate_examples
            total["functions"] += len(res.functions) + copied
            total["examples"] += sum(len(h) for _, h, _ in res.functions) + res.duplicate_examples
        out[split] = total
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lang", default=grammars.DEFAULT)
    ap.add_argument("--held-out", type=Path, default=None, help="the corpus whose dev and test are held out "
                    "(default: --corpus)")
    ap.add_argument("--every", type=int, default=1, help="take every N-th train file (1: all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    lang = grammars.get(args.lang)
    keys, digest = dataset.held_out_keys(args.held_out or args.corpus, args.out, args.jobs, lang)
    files = dataset.list_split_files(args.corpus, "train", lang)[:: args.every]
    parts = [files[i:: args.jobs * 8] for i in range(args.jobs * 8)]
    root = str(args.corpus / "train")
    total = {"files": 0, "functions": 0, "examples": 0, "dropped_functions": 0, "dropped_examples": 0}
    by_project: Counter = Counter()
    hits: set[int] = set()
    with process_pool(args.jobs) as pool:
        for r in pool.map(_count, [root] * len(parts), parts, [lang.id] * len(parts), [keys] * len(parts)):
            by_project.update(r.pop("by_project"))
            hits |= r.pop("hits")
            for k in total:
                total[k] += r[k]
    report = {"held_out_distinct_functions": len(keys), "dedup": digest, "every": args.every, **total,
              "top_projects": by_project.most_common(10), "held_out_functions_in_train": len(hits)}
    report.update(_held_out_share(args.held_out or args.corpus, lang, frozenset(hits)))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
