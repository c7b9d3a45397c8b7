"""The FIM baseline's search at a hole, without torch: its evaluation (model/fim_eval.py, the model on
torch) and the server (model/baseline_runtime.py, its ONNX graph) run this one search.

The prompt is the hole's prefix and suffix (model/fim_data.py's `fim_prompt`, cut to fit the block
less the room left for the middle), the prefix healed (`heal`: a space that ends it moves into the
middle); the search is token_search's beam, the prompt read once and then
one token per hypothesis with the model's key-value cache; tokens holding a newline are never taken
(`fim_tokenizer.middle_banned`: every hole is one line).
"""
from __future__ import annotations

import functools
import re
from typing import Callable

import numpy as np

from anycode.model.fim_data import fim_prompt
from anycode.model.fim_tokenizer import EOT, decode
from anycode.model.token_search import FimHole, beam_search, finishers

MAX_NEW = 64        # tokens a middle may take: the holes are expressions of at most 120 characters
LONE_SPACE = re.compile(r"(?<=\S) $")


@functools.lru_cache(maxsize=4)
def _space_first(tok, vocab: int) -> np.ndarray:
    """[vocab] True for the tokens whose text starts with a space."""
    return np.array([decode(tok, [i]).startswith(" ") for i in range(vocab)])


def heal(prefix: str) -> tuple[str, bool]:
    """The prefix the prompt ends with, and whether the middle must start with a space.  Byte-level BPE
    joins a space to the word after it (` a` is one token), so a prefix ending in one space after a
    word or symbol (`return `, `x = `) would end the prompt in a lone space token, a place where
    training saw few middles start; the prompt ends before the space, and the middle's first token
    must start with one (token healing)."""
    return (prefix[:-1], True) if LONE_SPACE.search(prefix) else (prefix, False)


def search(step: Callable[[np.ndarray, np.ndarray | None], np.ndarray], tok, hole: FimHole, beam: int,
           banned: np.ndarray, block: int, check=None, spm: bool = False,
           stop=None) -> dict[str, list[tuple[str, float]]]:
    """The middles the model writes for `hole`, best first: "plain", every text; with `check`, also
    "grammar", only the texts it accepts.  `step(tokens, parents)`: log p [n, vocab] after the last of
    each row of tokens [n, T], the model's cache first reordered to the rows `parents` [n] of the last
    call (None: a fresh cache, the prompt); `block`: the model's context; `stop`: token_search's."""
    max_new = min(MAX_NEW, block // 2)
    prefix, space = heal(hole.prefix)
    prompt = fim_prompt(tok, prefix, hole.suffix, block - max_new, spm)
    first = step(np.array([prompt], np.int64), None)
    if space:
        first = np.where(_space_first(tok, first.shape[-1]), first, -np.inf)
    return beam_search(first, lambda parents, tokens: step(tokens[:, None], parents), beam, banned,
                       finishers(lambda ids: decode(tok, ids).strip(), check), min(max_new, block - len(prompt)),
                       EOT, stop)
