"""The seq2seq baseline's search at a hole, without torch: its evaluation (model/s2s_eval.py, the
model on torch) and the server (model/baseline_runtime.py, its ONNX graphs) run this one search.

The source is built as training builds it (model/s2s_data.py: the function's pieces with HOLE, its
OOV pieces as slots); a hole that does not sit on token boundaries has no candidates.  The search is
token_search's beam, the decoder run again over each hypothesis's whole prefix (targets are short:
no cache).  It never writes UNK, PAD, BOS, HOLE or a slot the source does not hold; a slot is written
as the source piece it stands for.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from anycode.model.s2s_data import (BOS, EOS, FIRST_SLOT, FIRST_WORD, HOLE, JOIN, PAD, SPECIALS, UNK, code_pieces,
                                    encode_function, hole_pieces, make_example, pieces_text)
from anycode.model.token_search import FimHole, beam_search, finishers


def vocab_words(vocab: list[str]) -> dict[str, int]:
    """piece -> id of the vocabulary's words (not the specials nor the slots)."""
    return {p: i for i, p in enumerate(vocab) if i >= FIRST_WORD}


def hole_source(hole: FimHole, words: dict[str, int], vocab: int, max_src: int,
                max_tgt: int) -> tuple[np.ndarray, list[str]] | None:
    """The source [S] (int64) of a located hole, as training builds it, and the piece each OOV slot
    stands for; None when the hole's bytes are not whole tokens.  `max_tgt`: the model's, EOS included."""
    lang = hole.tree.lang
    code = hole.function_code()
    text = code.decode("utf8", "replace")
    char = (lambda i: i) if len(text) == len(code) else (lambda i: len(code[:i].decode("utf8", "replace")))
    pieces, first, spans = code_pieces(lang, text)
    ab = hole_pieces(first, spans, len(pieces), char(hole.start - hole.fn_start), char(hole.end - hole.fn_start))
    if ab is None:
        return None
    ids, oov = encode_function(pieces, words)
    src, _, slots = make_example(ids, ab[0], ab[1], vocab, max_src, max_tgt - 1)
    return src, [oov[j] for j in slots]


def search(decode_last: Callable[[np.ndarray], np.ndarray], slots: list[str], vocab: list[str], lang, beam: int,
           max_tgt: int, check=None, stop=None) -> dict[str, list[tuple[str, float]]]:
    """The texts the model writes for a hole, best first: "plain", every text; with `check`, also
    "grammar", only the texts it accepts.  `decode_last(prefix)`: log p [n, vocab] of the piece after
    each target prefix [n, T] (BOS first), the hole's source bound; `stop`: token_search's."""
    banned = np.zeros(len(vocab), dtype=bool)
    banned[[PAD, BOS, HOLE, UNK]] = True
    banned[FIRST_SLOT + len(slots): FIRST_WORD] = True
    state = {"prefix": np.array([[BOS]], np.int64)}

    def advance(parents: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        state["prefix"] = np.concatenate([state["prefix"][parents], tokens[:, None]], 1)
        return decode_last(state["prefix"])

    def to_text(ids: list[int]) -> str:
        pieces = [slots[i - FIRST_SLOT] if FIRST_SLOT <= i < FIRST_WORD else SPECIALS[JOIN] if i == JOIN else vocab[i]
                  for i in ids]
        return pieces_text(lang, pieces).strip()

    first = decode_last(state["prefix"])
    return beam_search(first, advance, beam, banned, finishers(to_text, check), max_tgt, EOS, stop)
