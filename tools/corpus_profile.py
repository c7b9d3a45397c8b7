"""How unlike each other folders of code are, in the figures that set script-like code apart from
library code (issue 22): function length, docstrings, numbers among the values.

    python tools/corpus_profile.py data/corpus/python/test data/corpus-scripts/python/test

For each folder, over every function of its source files (paths with "test" in them are left out, as
holebench and the dataset do): the functions, their median and p90 length in lines, the share with a
docstring, the share of at most 20 lines (the dataset's limit), and among the valued leaves of the
functions (identifiers, numbers, strings) the share that are numbers.  One JSON object a folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from anycode import grammars
from anycode.model import dataset


def profile(folder: Path, lang) -> dict:
    parser = lang.new_parser()
    lines, docs, leaves, numbers, files = [], 0, 0, 0, 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix in lang.extensions):
        if "test" in str(path.relative_to(folder)).lower():
            continue
        try:
            tree = lang.parse(path.read_bytes(), parser)
        except (OSError, ValueError):
            continue
        files += 1
        for n in dataset.function_nodes(tree.root_node, lang):
            lines.append(n.end_point[0] - n.start_point[0] + 1)
            docs += lang.docstring(n) is not None
            for leaf in lang.convert(n).walk():
                if leaf.value is not None and lang.kind_of(leaf.type) == "valued":
                    leaves += 1
                    numbers += lang.lone_number(leaf.value)
    if not lines:
        return {"folder": str(folder), "files": files, "functions": 0}
    lines.sort()
    return {"folder": str(folder), "files": files, "functions": len(lines),
            "median_lines": statistics.median(lines), "p90_lines": lines[int(0.9 * (len(lines) - 1))],
            "within_20_lines": round(100 * sum(x <= 20 for x in lines) / len(lines), 1),
            "with_docstring": round(100 * docs / len(lines), 1),
            "number_leaves": round(100 * numbers / max(leaves, 1), 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--lang", default=grammars.DEFAULT)
    args = ap.parse_args(argv)
    lang = grammars.get(args.lang)
    sys.setrecursionlimit(10000)
    for folder in args.folders:
        print(json.dumps(profile(folder, lang)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
