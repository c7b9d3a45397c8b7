"""The token baselines' holes and search, without torch (issue 21): what their evaluation
(model/fim_eval.py, model/s2s_eval.py, on torch) and their server path (model/baseline_runtime.py,
on ONNX Runtime) share, so that both run one search over the same hole.

`FimHole` is an expression's place in a file and in its function (the context each baseline reads);
`beam_search` is the beam over an `advance` function each model gives (log-probabilities as numpy
arrays), with the finished lists of `finishers`: "plain", every text, and "grammar", only the texts
a check accepts (the hole's parse: the server's `Hole.verify`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from anycode.grammars import Language
from anycode.model.paths import FlatTree


@dataclass
class FimHole:
    """An expression's place in its file (and its function: the context the seq2seq baseline
    reads, model/s2s_eval.py): an evaluation example, or the server's hole (baseline_runtime.py)."""
    tree: FlatTree
    h: int
    source: bytes
    start: int
    end: int
    fn_start: int = 0
    fn_end: int = 0
    fn_comments: tuple = ()      # byte ranges of the comments inside the function

    @property
    def prefix(self) -> str:
        return self.source[: self.start].decode("utf8", "replace")

    @property
    def suffix(self) -> str:
        return self.source[self.end:].decode("utf8", "replace")

    def function_code(self) -> bytes:
        """The function's bytes with its comments blanked (offsets from fn_start stay)."""
        return blank(self.source[self.fn_start: self.fn_end], self.fn_comments, self.fn_start)


def blank(code: bytes, spans, offset: int = 0) -> bytes:
    """`code` with the byte ranges `spans` (file offsets; code starts at `offset`) replaced by spaces."""
    out = bytearray(code)
    for a, b in spans:
        a, b = max(a - offset, 0), min(b - offset, len(out))
        out[a:b] = b" " * max(b - a, 0)
    return bytes(out)


def function_at(lang: Language, root, line: int, tree: FlatTree):
    """(node, flat) of the function starting at `line` (1-based) under the parsed file's `root` that
    flattens to `tree` (the same node types and values, as the dataset flattened it), or None."""
    stack = [root]
    while stack:
        n = stack.pop()
        if n.start_point[0] > line - 1 or n.end_point[0] < line - 1:
            continue
        stack.extend(n.children)
        if n.type in lang.FUNCTION_TYPES and n.start_point[0] == line - 1:
            flat = FlatTree.from_node(lang.convert(n), lang)
            if flat.types == tree.types and flat.values == tree.values:
                return n, flat
    return None


# ---------------------------------------------------------------- the search


class Stopped(Exception):
    """`beam_search`'s `stop()` said so: the search ends with what is finished."""


def beam_search(first: np.ndarray, advance, beam: int, banned: np.ndarray, finishers: dict, max_new: int,
                end: int, stop: Callable[[], None] | None = None) -> dict[str, list[tuple[str, float]]]:
    """For each named `finish(ids)` of `finishers` (an ended hypothesis's text, or None to reject it),
    the best `beam` finished outputs, (text, log-probability), best first.  `first` [1, V] holds the
    log-probabilities of the first token; `advance(parents, tokens)` those of the next token of each
    live hypothesis [n, V], given which hypothesis of the last step each extends (`parents` [n]) and
    the token it appended (`tokens` [n]).  `stop()`, called before each step, may raise: `Stopped`
    ends the search with what is finished (a time budget), anything else goes up (a cancellation).

    At every step each live hypothesis may end with `end` (its score is offered to every finished
    list, not only when `end` is among the step's best expansions), and the `beam` best expansions by
    other tokens live on.  Which hypotheses live does not depend on the finished lists, so one search
    serves several of them.  Scores only fall: the search stops when no live hypothesis can enter any
    finished list."""
    lp_next = first
    seqs, scores = [[]], np.zeros(1)
    done: dict[str, list[tuple[float, str]]] = {name: [] for name in finishers}
    for step in range(max_new):
        lp = np.where(banned, -np.inf, np.asarray(lp_next, np.float64)) + scores[:, None]
        for name, finish in finishers.items():
            offer_finished(done[name], seqs, lp[:, end].tolist(), beam, finish)
        lp[:, end] = -np.inf
        flat = lp.reshape(-1)
        k = min(beam, flat.size)
        best = np.argpartition(-flat, k - 1)[:k]
        best = best[np.argsort(-flat[best], kind="stable")]
        live = [(float(flat[i]), *divmod(int(i), lp.shape[1])) for i in best if flat[i] > -np.inf]
        if step == max_new - 1 or not live or all(len(d) == beam and live[0][0] <= d[-1][0] for d in done.values()):
            break
        if stop is not None:
            try:
                stop()
            except Stopped:
                break
        seqs = [seqs[a] + [v] for _, a, v in live]
        scores = np.array([sc for sc, _, _ in live])
        lp_next = advance(np.array([a for _, a, _ in live], np.int64), np.array([v for _, _, v in live], np.int64))
    return {name: [(t, sc) for sc, t in d] for name, d in done.items()}


def offer_finished(done: list, seqs: list[list[int]], eot_scores: list[float], beam: int, finish) -> None:
    """Each hypothesis ended here enters `done` (kept best first, `beam` at most, each text once)
    where its score would place it and `finish` accepts it."""
    for ids, sc in zip(seqs, eot_scores):
        if sc == -np.inf or (len(done) == beam and sc <= done[-1][0]):
            continue
        text = finish(ids)
        if text is not None and all(text != t for _, t in done):
            done.append((sc, text))
            done.sort(key=lambda x: -x[0])
            del done[beam:]


def finishers(to_text, check=None) -> dict:
    """The finished lists of one search: "plain", every non-empty text (`to_text(ids)`, each decoded
    once); with `check`, also "grammar", only the texts it accepts."""
    texts: dict[tuple, str] = {}

    def text_of(ids) -> str:
        key = tuple(ids)
        if key not in texts:
            texts[key] = to_text(ids)
        return texts[key]

    out = {"plain": lambda ids: text_of(ids) or None}
    if check is not None:
        out["grammar"] = lambda ids: text_of(ids) if text_of(ids) and check(text_of(ids)) else None
    return out
