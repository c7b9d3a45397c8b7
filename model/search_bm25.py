"""The BM25 baseline of code search (bm25s, Lucene's BM25 with k1=1.5, b=0.75), measured as the encoders are.

    python -m anycode.model.search_bm25 [--data data/search/python] [--cosqa ../shared/data/cosqa]

Queries and functions are split into the same lowercased words and identifier parts as the
encoders' inputs (`search_data.words`), over the whole text: the test split's functions without
their docstrings, CoSQA's functions as published (their docstrings included).  Document frequencies
come from the set searched: all of the test split's functions, or each CoSQA set's distinct
functions.  Prints the figures as JSON (model/search_eval.py defines them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from anycode.model import search_eval
from anycode.model.search_data import read_pairs, words


def score_matrix(queries: list[list[str]], docs: list[list[str]]) -> np.ndarray:
    """BM25 scores [Q, D] of every query against every document (lists of words)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index([d or [""] for d in docs], show_progress=False)
    return np.stack([retriever.get_scores(q) if q else np.zeros(len(docs), np.float32) for q in queries])


def csn_test(data: Path, split: str = "test") -> dict:
    pairs = list(read_pairs(data, split))
    scores = score_matrix([words(p["query"]) for p in pairs], [words(p["code"]) for p in pairs])
    return search_eval.csn_mrr(len(pairs), lambda idx: scores[np.ix_(idx, idx)])


def cosqa_set(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores [Q, F] against the set's distinct functions, each query's function id, and labels
    (-1 where unknown: WebQueryTest's are in webquery_answers.txt, for the few published)."""
    records = json.loads(Path(path).read_text())
    answers_file = Path(path).parent / "webquery_answers.txt"
    answers = {}
    if "label" not in records[0] and answers_file.exists():
        answers = dict(line.split("\t") for line in answers_file.read_text().split("\n") if "\t" in line)
    codes: dict[str, int] = {}
    code_id = np.array([codes.setdefault(r["code"], len(codes)) for r in records])
    labels = np.array([int(r.get("label", answers.get(r["idx"], -1))) for r in records])
    scores = score_matrix([words(r["doc"]) for r in records], [words(c) for c in codes])
    return scores, code_id, labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/search/python"))
    ap.add_argument("--cosqa", type=Path, default=Path("../shared/data/cosqa"))
    args = ap.parse_args(argv)
    out = {"method": "bm25s Lucene k1=1.5 b=0.75"}
    out["dev_csn"] = csn_test(args.data, "dev")
    out["test_csn"] = csn_test(args.data, "test")
    if (args.cosqa / "cosqa-dev.json").exists():
        out["cosqa"] = search_eval.cosqa_report(*cosqa_set(args.cosqa / "cosqa-dev.json"),
                                                *cosqa_set(args.cosqa / "test_webquery.json"))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
