"""Paths as the arrays the network reads: shared by training, evaluation and the runtime.

Symbols: the values a terminal step can produce.  Ids 0..V-1 are the subtoken
vocabulary; then come the tokens and subtokens of this request's context that
the vocabulary lacks, so copying can produce them.  Copy columns of a leaf:
column 0 votes for its whole token, column 1+i for its i-th subtoken.

File tokens (models with `file_tokens` > 0): the most frequent identifiers of the
file outside the context (`outside_identifiers`), copied whole.  Each is encoded
as its value alone (the path LSTM's first step) and scored by its own copy
matrix; they take no part in the transformer or the attention.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from anycode.grammars import Language
from anycode.model.paths import ContextPaths, FlatTree, context_paths
from anycode.model.vocab import EMPTY, Vocab

MAX_VALUE_SUBTOKENS = 8       # subtokens summed into a leaf's value embedding
MAX_COPY_POSITIONS = 8


@dataclass
class Symbols:
    vocab: Vocab
    extra: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.extra_id = {s: len(self.vocab.subtokens) + i for i, s in enumerate(self.extra)}

    def __len__(self) -> int:
        return len(self.vocab.subtokens) + len(self.extra)

    def add(self, s: str) -> int:
        i = self.id(s)
        if i is None:
            i = self.extra_id[s] = len(self)
            self.extra.append(s)
        return i

    def id(self, s: str) -> int | None:
        i = self.vocab.sub_id.get(s)
        return i if i is not None else self.extra_id.get(s)

    def string(self, i: int) -> str:
        n = len(self.vocab.subtokens)
        return self.vocab.subtokens[i] if i < n else self.extra[i - n]


def value_ids(vocab: Vocab, subtokens: list[str]) -> list[int]:
    return [vocab.subtoken_of(s) for s in subtokens[:MAX_VALUE_SUBTOKENS]]


def _token_cache(vocab: Vocab) -> dict:
    """Per-vocabulary memo of (type, token) -> (subtokens, value ids): featurizing a dataset asks
    for the same tokens (and the same 256 file tokens of a file) again and again."""
    cache = vocab.__dict__.get("_token_cache")
    if cache is None or len(cache) > 500_000:
        cache = vocab.__dict__["_token_cache"] = {}
    return cache


def token_subtokens(lang: Language, vocab: Vocab, type_key: str, value: str | None) -> tuple[list[str], list[int]]:
    """(subtokens, value ids) of a leaf's value, as `FlatTree.leaf_value` and `value_ids` give them."""
    cache = _token_cache(vocab)
    key = (type_key, value)
    hit = cache.get(key)
    if hit is None:
        subs = lang.subtokens(type_key, value) if value is not None else [EMPTY]
        hit = cache[key] = (subs, value_ids(vocab, subs))
    return hit


def copy_row(symbols: Symbols, token: str | None, subtokens: list[str]) -> list[int]:
    """Symbol ids a leaf's copy scores vote for: whole token, then subtoken by position."""
    row = [-1] * (1 + MAX_COPY_POSITIONS)
    if token is None:
        return row
    whole = symbols.id(token)
    row[0] = -1 if whole is None else whole
    for i, s in enumerate(subtokens[:MAX_COPY_POSITIONS]):
        j = symbols.id(s)
        row[1 + i] = -1 if j is None else j
    return row


@dataclass
class ContextFeatures:
    paths: ContextPaths
    symbols: Symbols
    leaf_values: np.ndarray       # [N, MAX_VALUE_SUBTOKENS] subtoken ids, 0 = padding
    prefix_types: np.ndarray      # [N, max_length] node type ids, leaf first, ending at p
    prefix_index: np.ndarray      # [N, max_length] child indices
    prefix_len: np.ndarray        # [N]
    leaf_copy: np.ndarray         # [N, 1 + MAX_COPY_POSITIONS] symbol ids, -1 = none
    root_types: np.ndarray        # [Lr] root ... p
    root_index: np.ndarray        # [Lr]
    whole_tokens: frozenset[str]  # values of context leaves and file tokens: a target token among them is copied whole
    file_tokens: list[str] = field(default_factory=list)
    file_values: np.ndarray = field(default_factory=lambda: np.zeros((0, MAX_VALUE_SUBTOKENS), np.int64))
    file_symbols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # [F] symbol ids


def outside_identifiers(tree: FlatTree, limit: int, exclude=frozenset()) -> list[str]:
    """The identifiers of `tree.file_identifiers` that occur outside the tree, most frequent
    (outside) first, ties in order of first occurrence, at most `limit`, none of `exclude`.
    The tree's own identifier leaves are what is subtracted, so a hole's target (in the tree
    while training, absent from the buffer when serving) never counts."""
    if limit <= 0 or not tree.file_identifiers:
        return []
    ranked = tree.__dict__.get("_outside_ranked")     # the same for every hole of the tree
    if ranked is None:
        inside = Counter(v for t, v in zip(tree.types, tree.values)
                         if v is not None and tree.lang.base_type(t) == tree.lang.IDENTIFIER)
        ranked = [(n - inside[s], s) for s, n in tree.file_identifiers if n > inside[s]]
        ranked.sort(key=lambda x: -x[0])
        ranked = tree.__dict__["_outside_ranked"] = [s for _, s in ranked]
    out = []
    for s in ranked:
        if s not in exclude:
            out.append(s)
            if len(out) == limit:
                break
    return out


def _node_arrays(tree: FlatTree, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Every node's type id and child index as arrays, kept on the tree (its holes share them)."""
    got = tree.__dict__.get("_node_arrays")
    if got is None or got[0] is not vocab:
        got = tree.__dict__["_node_arrays"] = (vocab, np.array([vocab.type_of(t) for t in tree.types], np.int64),
                                               np.array(tree.child_index, np.int64))
    return got[1], got[2]


def context_features(tree: FlatTree, h: int, vocab: Vocab, max_paths: int = 200,
                     max_length: int = 24, file_tokens: int = 0) -> ContextFeatures:
    ctx = context_paths(tree, h, max_paths, max_length)
    n = len(ctx.leaves)
    symbols = Symbols(vocab)
    leaf_values = np.zeros((n, MAX_VALUE_SUBTOKENS), np.int64)
    prefix_types = np.zeros((n, max_length), np.int64)
    prefix_index = np.zeros((n, max_length), np.int64)
    prefix_len = np.zeros(n, np.int64)
    subs_of = []
    type_ids, child_index = _node_arrays(tree, vocab)
    for k, (leaf, prefix) in enumerate(zip(ctx.leaves, ctx.prefixes)):
        subs, ids = token_subtokens(tree.lang, vocab, tree.types[leaf], tree.values[leaf])
        subs_of.append(subs)
        leaf_values[k, : len(ids)] = ids
        prefix_len[k] = len(prefix)
        value = tree.values[leaf]
        if value is not None:
            symbols.add(value)
            for s in subs:
                symbols.add(s)
    if n:
        flat = np.fromiter((i for prefix in ctx.prefixes for i in prefix), np.int64)
        rows = np.repeat(np.arange(n), prefix_len)
        cols = np.arange(len(flat)) - np.repeat(np.cumsum(prefix_len) - prefix_len, prefix_len)
        prefix_types[rows, cols] = type_ids[flat]
        prefix_index[rows, cols] = child_index[flat]
    leaf_copy = np.array([copy_row(symbols, tree.values[leaf], subs) for leaf, subs in zip(ctx.leaves, subs_of)],
                         np.int64).reshape(n, 1 + MAX_COPY_POSITIONS)
    whole = frozenset(tree.values[leaf] for leaf in ctx.leaves if tree.values[leaf] is not None)
    outside = outside_identifiers(tree, file_tokens, whole)
    file_values = np.zeros((len(outside), MAX_VALUE_SUBTOKENS), np.int64)
    for k, tok in enumerate(outside):
        ids = token_subtokens(tree.lang, vocab, tree.lang.IDENTIFIER, tok)[1]
        file_values[k, : len(ids)] = ids
    file_symbols = np.array([symbols.add(tok) for tok in outside], np.int64)
    return ContextFeatures(
        ctx, symbols, leaf_values, prefix_types, prefix_index, prefix_len, leaf_copy,
        np.array([vocab.type_of(tree.types[i]) for i in ctx.root_prefix], np.int64),
        np.array([tree.child_index[i] for i in ctx.root_prefix], np.int64), whole | frozenset(outside),
        outside, file_values, file_symbols)


def generated_leaf_value(lang: Language, type_key: str, parts: list[str]) -> tuple[str | None, list[str]]:
    """(token, subtokens) of a leaf generated inside the hole from its value parts."""
    if lang.kind_of(type_key) != "valued" or not parts:
        return None, [EMPTY]
    token = lang.join_value(type_key, parts)
    return token, lang.subtokens(type_key, token)
