"""The exported encoders and BM25 together, measured as each alone is (docs/search.md):

    python -m anycode.model.search_hybrid ENCODERS [--data data/search/python] [--cosqa ../shared/data/cosqa] [--write]

A query's scores from each ranking are standardized over the functions it is ranked against (mean 0,
deviation 1: the two scales have nothing in common) and summed, BM25's weighted by w:
`z(encoders) + w * z(bm25)`.  w is chosen by the dev split's MRR over a grid (0 is the encoders
alone), then the test split and CoSQA's WebQueryTest are measured with it.  The encoders read the
functions as the server does (`search_runtime`, ONNX Runtime, from source); BM25 is
model/search_bm25.py's.  Prints JSON; with --write, w goes into the encoders' config.json, where
the search's ranking (search_index.ranker) reads it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from anycode.model import search_bm25, search_eval
from anycode.model.search_data import Features, MAX_CODE_SUBTOKENS, read_pairs, source_features, words
from anycode.model.search_index import zscore
from anycode.model.search_pack import restore_newlines
from anycode.model.search_runtime import SearchEncoders

WEIGHTS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def features_of(code: str, enc: SearchEncoders, parser) -> Features:
    """A function's features from its source (CoSQA's flattened newlines restored where needed);
    its words alone where it does not parse, as search_pack does for CoSQA."""
    return (source_features(code, enc.lang, parser) or source_features(restore_newlines(code), enc.lang, parser)
            or Features(words(code)[:MAX_CODE_SUBTOKENS], []))


def score_pair(enc: SearchEncoders, queries: list[str], codes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encoder and BM25 scores [Q, F] of the queries against the functions."""
    parser = enc.lang.new_parser()
    e = enc.queries(queries) @ enc.functions([features_of(c, enc, parser) for c in codes]).T
    b = search_bm25.score_matrix([words(q) for q in queries], [words(c) for c in codes])
    return e, b


def csn(enc: SearchEncoders, data: Path, split: str) -> tuple[int, np.ndarray, np.ndarray]:
    pairs = list(read_pairs(data, split))
    return (len(pairs), *score_pair(enc, [p["query"] for p in pairs], [p["code"] for p in pairs]))


def mrr_at(n: int, e: np.ndarray, b: np.ndarray, w: float | None) -> float:
    """CodeSearchNet's MRR of `z(e) + w z(b)`; of BM25 alone where w is None."""
    if w is None:
        return search_eval.csn_mrr(n, lambda idx: b[np.ix_(idx, idx)])["mrr"]
    return search_eval.csn_mrr(n, lambda idx: zscore(e[np.ix_(idx, idx)]) + w * zscore(b[np.ix_(idx, idx)]))["mrr"]


def webquery(enc: SearchEncoders, path: Path, w: float) -> dict:
    """Each WebQueryTest query's paired function among the set's distinct functions (all pairs)."""
    records = json.loads(path.read_text())
    codes: dict[str, int] = {}
    code_id = np.array([codes.setdefault(r["code"], len(codes)) for r in records])
    e, b = score_pair(enc, [r["doc"] for r in records], list(codes))
    out = {}
    for name, weight in (("encoders", 0.0), ("hybrid", w)):
        out[name] = search_eval.cosqa_mrr(zscore(e) + weight * zscore(b), code_id, np.ones(len(records), bool))["mrr"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("encoders", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/search/python"))
    ap.add_argument("--cosqa", type=Path, default=Path("../shared/data/cosqa"))
    ap.add_argument("--write", action="store_true",
                    help="store the chosen w in ENCODERS/config.json (bm25_weight): the server's ranking")
    a = ap.parse_args(argv)
    enc = SearchEncoders(a.encoders)
    dev = csn(enc, a.data, "dev")
    by_w = {w: mrr_at(*dev, w) for w in WEIGHTS}
    best = max(by_w, key=by_w.get)
    test = csn(enc, a.data, "test")
    out = {"encoders": str(a.encoders), "dev_mrr_by_w": by_w, "w": best,
           "test_mrr": {"encoders": mrr_at(*test, 0.0), "hybrid": mrr_at(*test, best), "bm25": mrr_at(*test, None)}}
    if (a.cosqa / "test_webquery.json").exists():
        out["webquery_mrr_all_pairs"] = webquery(enc, a.cosqa / "test_webquery.json", best)
    print(json.dumps(out, indent=1))
    if a.write:
        config = json.loads((a.encoders / "config.json").read_text())
        config["bm25_weight"] = best
        (a.encoders / "config.json").write_text(json.dumps(config, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
