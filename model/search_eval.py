"""Code-search metrics, for any scorer (BM25, the encoders): numpy only, so they run where the
encoders train.

- `csn_mrr`: CodeSearchNet's protocol.  The pairs are shuffled with a fixed seed and cut into
  chunks of 1,000 (the last, shorter chunk is left out unless it is the only one); each query is
  ranked against the 1,000 functions of its chunk: its own and 999 distractors.  A rank counts every
  function scoring at least as high as the right one (ties count against), as CodeSearchNet does.
- `cosqa_mrr`: each query with a known answer among all of the set's distinct functions.
- `cosqa_accuracy`: CodeXGLUE's accuracy for WebQuery (does the paired function answer the query),
  from a retrieval score and a threshold chosen where labels are known.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

CHUNK = 1000


def ranks(scores: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Rank of column right[i] in row i of scores [Q, N]: functions scoring at least as high."""
    own = scores[np.arange(len(scores)), right]
    return (scores >= own[:, None]).sum(1)


def csn_chunks(n: int, seed: int = 0, size: int = CHUNK) -> list[np.ndarray]:
    """The index chunks of the protocol."""
    order = np.random.default_rng(seed).permutation(n)
    if n <= size:
        return [order]
    return [order[i: i + size] for i in range(0, n - size + 1, size)]


def csn_mrr(n: int, score_chunk: Callable[[np.ndarray], np.ndarray], seed: int = 0,
            size: int = CHUNK) -> dict:
    """MRR over chunks; score_chunk(idx) gives the [len(idx), len(idx)] scores of those queries
    (rows) against those functions (columns)."""
    rr = []
    for idx in csn_chunks(n, seed, size):
        rr.append(1.0 / ranks(np.asarray(score_chunk(idx), np.float64), np.arange(len(idx))))
    rr = np.concatenate(rr)
    return {"mrr": float(rr.mean()), "queries": int(len(rr)), "chunk": int(min(n, size)), "seed": seed}


def cosqa_mrr(scores: np.ndarray, code_id: np.ndarray, mask: np.ndarray) -> dict:
    """MRR of the queries where mask holds; scores [Q, F] against the F distinct functions."""
    q = np.flatnonzero(mask)
    if not len(q):
        return {"mrr": None, "queries": 0}
    rr = 1.0 / ranks(scores[q], code_id[q])
    return {"mrr": float(rr.mean()), "queries": int(len(q)), "functions": int(scores.shape[1])}


def best_threshold(pair_scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (score >= t answers) with the highest accuracy on labelled pairs, midway
    between two observed scores so that unseen scores near the boundary fall on either side fairly."""
    u = np.unique(pair_scores)
    cands = np.concatenate([[u[0] - 1.0], (u[1:] + u[:-1]) / 2, [u[-1] + 1.0]])
    acc = [((pair_scores >= t) == (labels == 1)).mean() for t in cands]
    return float(cands[int(np.argmax(acc))])


def accuracy(pair_scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(((pair_scores >= threshold) == (labels == 1)).mean())


def cross_validated_accuracy(pair_scores: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Accuracy on each fold with the threshold chosen on the others, over all pairs."""
    order = np.random.default_rng(seed).permutation(len(labels))
    hits = 0
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        t = best_threshold(pair_scores[train], labels[train])
        hits += ((pair_scores[test] >= t) == (labels[test] == 1)).sum()
    return float(hits / len(labels))


def cosqa_report(dev_scores: np.ndarray, dev_code: np.ndarray, dev_label: np.ndarray,
                 test_scores: np.ndarray, test_code: np.ndarray, test_label: np.ndarray) -> dict:
    """The CoSQA figures of docs/search.md from [Q, F] score matrices of the dev and WebQueryTest
    sets (queries against each set's distinct functions)."""
    dev_pair = dev_scores[np.arange(len(dev_code)), dev_code]
    test_pair = test_scores[np.arange(len(test_code)), test_code]
    t = best_threshold(dev_pair, dev_label)
    known = test_label >= 0
    return {
        "dev_mrr_answered": cosqa_mrr(dev_scores, dev_code, dev_label == 1),
        "dev_accuracy_5fold": cross_validated_accuracy(dev_pair, dev_label),
        "threshold_from_dev": t,
        "test_mrr_all_pairs": cosqa_mrr(test_scores, test_code, np.ones(len(test_code), bool)),
        "test_mrr_answered": cosqa_mrr(test_scores, test_code, test_label == 1),
        "test_accuracy_labelled": {"accuracy": accuracy(test_pair[known], test_label[known], t) if known.any() else None,
                                   "pairs": int(known.sum())},
    }
