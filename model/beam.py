"""Beam search over the SLM's decoding graphs, in numpy.

The search grows trees node by node in the order `paths.target_steps` defines:
depth first, every nonterminal closed by EOS-node, every valued terminal's value
spelled in parts (whole tokens or subtokens) and closed by EOS-token.  At each
step every live beam of the request is scored in one batch (`Backend.score`),
over S_t exactly as `paths.step_paths` spells it:

  * context leaves: the state of each leaf's path at p, the hole's parent, is
    computed once per request (`Decoder.prepare`); at a hole node n it is the
    state at n's parent advanced by one node (`Backend.node_step`).  Those states
    depend only on the chain of hole nodes from p down to pi_t (the beam's DFS
    stack), so they are kept per chain, shared by the beams on it, and each new
    chain costs one batched step for all N leaves (plus the root path R_t, kept
    as row N of the same arrays);
  * generated leaves: leaf -> pi_t paths inside the hole, kept in a trie of
    states keyed by (value, nodes), so a path grown by one node costs one step;
  * only children the grammar table allows (`GrammarTable`), EOS-node only at
    child counts it has seen, values of the right shape, and the hole's root one
    of the dataset's target types; past `soft_steps`, beams are steered to close.

Caching across requests (`LeafCache`, `Decoder.prepare`): a context leaf's
path runs up from the leaf to its lowest common ancestor with p, then down the
chain to p.  The upward part does not depend on the hole, so its state is kept
keyed by its content (leaf value ids, node types and child indices), which no
edit can make stale; the whole context (all prefixes at p, and R_t) is kept per
document keyed by the same content plus p's chain, so a request whose context
is unchanged (the user typing inside the hole) re-encodes nothing.

`Backend` is the interface runtime.OrtBackend (ONNX Runtime) and
torch_backend.TorchBackend (the torch model) implement.
"""
from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from anycode.grammars import Language, Node, Unprintable
from anycode.model.features import (MAX_VALUE_SUBTOKENS, ContextFeatures, context_features, copy_row,
                                    generated_leaf_value, value_ids)
from anycode.model.paths import FlatTree, target_steps, value_subtokens
from anycode.model.prefix import CONSISTENT, COVERED, INCONSISTENT, Prefix
from anycode.model.vocab import EMPTY, EOS_NODE, EOS_TOK, MAX_CHILD_INDEX, Vocab

NEG_INF = -np.inf
_KEYS = MAX_CHILD_INDEX + 1
MAX_VALUE_PARTS = MAX_VALUE_SUBTOKENS
# the search's bounds, as the runtime sets them: steps per hypothesis, the step after which beams are
# steered to close, the depth of the DFS stack
MAX_STEPS = 64
SOFT_STEPS = 40
MAX_DEPTH = 10
# past the soft deadline with nothing finished, hypotheses kept per amount of a typed start printed:
# one each left more requests unanswered, the whole beam (20 in a widened search) ran past the hard
# deadline on a loaded machine (docs/bench.md, "A typed request's cost")
CLOSING_WIDTH = 2


class Backend(Protocol):
    name: str

    def value_step(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def node_step(self, types: np.ndarray, index: np.ndarray, h: np.ndarray,
                  c: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def score(self, paths, mask, root, child_index, copy_symbols, z=None, files=None,
              file_symbols=None) -> tuple[np.ndarray, np.ndarray]: ...   # files: file_tokens models

    def contextualize(self, paths: np.ndarray, mask: np.ndarray) -> np.ndarray: ...   # context_once models


# ---------------------------------------------------------------- caches


class LRUCache:
    """A bounded map that forgets the least recently used entry first, counting hits."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self.data: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes):
        v = self.data.get(key)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
            self.data.move_to_end(key)
        return v

    def put(self, key: bytes, value) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.max_entries:
            self.data.popitem(last=False)


class LeafCache(LRUCache):
    """The upward states of context leaves, keyed by content (see the module doc)."""

    def __init__(self, max_entries: int = 16384):
        super().__init__(max_entries)


class ContextCache(LRUCache):
    """The last few contexts of one document: prefix states at p, keyed by content."""

    def __init__(self, max_entries: int = 4):
        super().__init__(max_entries)


class ScoreMemo:
    """The network's outputs for the hypotheses scored in one context, kept for the next request in
    the same context: typing along at a hole leaves the context as it was, and most hypotheses of
    the search come back (docs/bench.md counts how many of the typing-along requests' score rows)."""

    def __init__(self, max_rows: int = 2048):
        self.max_rows = max_rows
        self.key: bytes | None = None
        self.rows: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.hits = self.misses = 0

    def use(self, key: bytes) -> None:
        if key != self.key or len(self.rows) > self.max_rows:
            self.key, self.rows = key, {}


# ---------------------------------------------------------------- hypotheses


class Hyp:
    """A partial tree inside the hole.  Node 0 is the hole's root; parent -1 is p."""

    __slots__ = ("types", "parent", "cindex", "keys", "kids", "parts", "stack", "suffix", "leaves", "logp",
                 "nsteps", "done", "covered", "progress")

    def __init__(self):
        self.types: list[str] = []
        self.parent: list[int] = []
        self.cindex: list[int] = []
        self.keys: list[int] = []           # _key of each node: its type and child index
        self.kids: list[list[int]] = []
        self.parts: list[list[str] | None] = []
        self.stack: list[int] = []          # open nodes, hole root first: the DFS frontier
        self.suffix: tuple[int, ...] = ()   # node keys of the stack: the chain below p
        self.leaves: list[int] = []         # generated leaves, in creation order
        self.logp = 0.0
        self.nsteps = 0
        self.done = False
        self.covered = False                # the typed prefix is printed whole: no more checks
        # how much of the typed start is printed: (whole tokens, characters of the value being spelled)
        self.progress = (0, 0)

    def copy(self) -> "Hyp":
        h = Hyp.__new__(Hyp)
        h.types, h.parent, h.cindex, h.keys = self.types[:], self.parent[:], self.cindex[:], self.keys[:]
        h.kids, h.parts = self.kids[:], self.parts[:]
        h.stack, h.suffix, h.leaves = self.stack[:], self.suffix, self.leaves[:]
        h.logp, h.nsteps, h.done, h.covered = self.logp, self.nsteps, self.done, self.covered
        h.progress = self.progress
        return h

    @property
    def pi(self) -> int:
        return self.stack[-1] if self.stack else -1

    def structure(self) -> tuple:
        """Everything the network's inputs take from this hypothesis (its tree, values and frontier)."""
        return (tuple(self.types), tuple(self.parent), tuple(self.cindex), tuple(self.stack), tuple(self.leaves),
                tuple(None if p is None else tuple(p) for p in self.parts))


def _key(type_id: int, index: int) -> int:
    return type_id * _KEYS + min(index, MAX_CHILD_INDEX)


@dataclass
class Finished:
    """An answer of the search: a finished hypothesis, its tree and its printed text (the typed start
    as the model spelled it, without the hole's frame)."""
    logp: float
    hyp: Hyp
    node: Node
    text: str


@dataclass
class Context:
    """One request: the hole's context, encoded up to p."""
    features: ContextFeatures
    n: int                          # context leaves
    p_type: str
    hole_index: int
    H: np.ndarray                   # [layers, N + 1, d] states at p; row N is the root path
    C: np.ndarray
    z: np.ndarray | None = None     # context_once: [N, d] the context paths contextualized
    files: np.ndarray | None = None  # file_tokens models: [F, d] the file tokens encoded (F >= 1: a pad row)
    file_symbols: np.ndarray | None = None   # [F] their symbols, -1 for the pad row
    extra_masks: dict = field(default_factory=dict)
    key: bytes = b""                # the context by content: equal keys, equal network inputs per hypothesis
    leaf_info: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


class Stopped(Exception):
    """Raised by a `check` callback to end the search and return what is finished."""


# ---------------------------------------------------------------- the partial printer (typed prefixes)

_SENT = "\x00"   # marks where a partial tree's next part would go


def build_node(hyp: Hyp, lang: Language, i: int = 0, open_fill: bool = False, frontier_marker: bool = True) -> Node:
    """Hypothesis node i as a `Node` of `lang`.  With `open_fill`, open nodes are padded with
    sentinel children so the partial tree prints; the frontier (the deepest open node)
    gets a sentinel where its next part would go unless `frontier_marker` is False."""
    t = hyp.types[i]
    kind = lang.kind_of(t)
    open_ = open_fill and i in hyp.stack
    frontier = open_ and hyp.stack[-1] == i and frontier_marker
    node = Node(t)
    if kind == "valued":
        node.value = lang.join_value(t, hyp.parts[i] or []) if hyp.parts[i] else ""
        if frontier:
            node.value += _SENT
    elif kind == "nonterminal":
        node.children = [build_node(hyp, lang, c, open_fill, frontier_marker) for c in hyp.kids[i]]
        if open_:
            k = len(node.children)
            need = max(lang.min_children(t) - k, 1 if frontier else 0)
            # markers that differ, so that two stand-ins are never the same operand (Language.redundant)
            node.children += [lang.sentinel(t, k + j, _SENT * (j + 1)) for j in range(need)]
        lang.set_fields(node)
    return node


def committed_text(hyp: Hyp, lang: Language) -> str | None:
    """The text of the hypothesis up to its frontier, which no later step can change;
    None when the partial tree does not print."""
    try:
        a = lang.print_node(build_node(hyp, lang, 0, True))
    except (Unprintable, IndexError, StopIteration):
        return None
    a = a[: a.index(_SENT)] if _SENT in a else a
    top = hyp.stack[-1] if hyp.stack else None
    if top is not None and lang.kind_of(hyp.types[top]) == "nonterminal":
        # the frontier may close instead of taking another child: keep what both agree on
        try:
            b = lang.print_node(build_node(hyp, lang, 0, True, frontier_marker=False))
        except (Unprintable, IndexError, StopIteration):
            return a
        b = b[: b.index(_SENT)] if _SENT in b else b
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        a = a[:k]
    return a


def typed_state(hyp: Hyp, prefix: Prefix) -> tuple[int, int | None]:
    """prefix.check_at on the hypothesis's committed text ((CONSISTENT, None) when it does not print)."""
    text = committed_text(hyp, prefix.lang)
    if text is None:
        return CONSISTENT, None
    pi = hyp.pi
    open_value = pi >= 0 and bool(hyp.parts[pi]) and prefix.lang.kind_of(hyp.types[pi]) == "valued"
    return prefix.check_at(text, open_value)


@lru_cache(maxsize=4096)
def leading_text(t: str, lang: Language) -> str | None:
    """What a node of type `t` prints before its first child or value ("" for values and for types
    that begin with a child: calls, operators); None when it does not print."""
    kind = lang.kind_of(t)
    if kind == "valued":
        return ""
    node = Node(t)
    if kind == "nonterminal":
        node.children = [lang.sentinel(t, k, _SENT) for k in range(max(lang.min_children(t), 1))]
        lang.set_fields(node)
    try:
        text = lang.print_node(node)
    except (Unprintable, IndexError, StopIteration):
        return None
    return text[: text.index(_SENT)] if _SENT in text else text


# ---------------------------------------------------------------- the decoder


class Decoder:
    def __init__(self, backend: Backend, vocab: Vocab, table=None, *, lang: Language, max_paths: int = 200,
                 max_length: int = 24, context_once: bool = False, file_tokens: int = 0):
        """`lang`: the language of the model (its types, values, printer and allowed roots).
        `context_once`: decode a context_once model (SLMConfig): the context paths stay at p and are
        contextualized once per request (`Backend.contextualize`), the chain states down the hole
        hold only the root path, and each step contextualizes its generated paths alone.
        `file_tokens`: the model's SLMConfig.file_tokens (the file's identifiers copied whole)."""
        self.backend = backend
        self.lang = lang
        self.context_once = context_once
        self.file_tokens = file_tokens
        # file tokens' encodings by value: a document's change little between requests, files share many
        self.file_cache = LRUCache(8192)
        self.vocab = vocab
        self.table = table
        self.max_paths = max_paths
        self.max_length = max_length
        T = len(vocab.node_types)
        self.T = T
        self.eos_node = vocab.type_id[EOS_NODE]
        self.eos_tok = vocab.sub_id[EOS_TOK]
        self.kind = [lang.kind_of(t) for t in vocab.node_types]
        self.generable = np.array([not t.startswith("<") for t in vocab.node_types])
        self.terminal = np.array([k != "nonterminal" for k in self.kind]) & self.generable
        self.root_ok = np.array([lang.target_root_type(t) for t in vocab.node_types]) & self.generable
        self._child_masks: dict[tuple[str, int], np.ndarray] = {}
        self._value_masks: dict[tuple[str, bool], np.ndarray] = {}
        self._value_ok_cache: dict[tuple[str, str, bool], bool] = {}
        self._closing: dict[tuple[str, int], int] = {}
        self._only: dict[tuple[str, int, bool], int | None] = {}
        self._first: dict = {}
        self._left: dict = {}

    # ------------------------------------------------------------ grammar masks

    def child_mask(self, parent_type: str, index: int) -> np.ndarray:
        key = (parent_type, min(index, MAX_CHILD_INDEX))
        m = self._child_masks.get(key)
        if m is None:
            if self.table is None or not self.table.known(parent_type):
                m = self.generable.copy()
            else:
                m = np.zeros(self.T, bool)
                for t in self.table.allowed_children(parent_type, index):
                    i = self.vocab.type_id.get(t)
                    if i is not None:
                        m[i] = True
                m &= self.generable
            self._child_masks[key] = m
        return m

    def only_label(self, ctx: Context, hy: Hyp) -> int | None:
        """The node label the grammar allows alone at the frontier of `hy` (EOS-node included), else
        None.  The network gives such a step log-probability 0 to within 1e-6 (measured over the bench's
        holes), so the search takes it as certain and asks the network nothing for that beam."""
        pi = hy.pi
        if pi < 0:
            key = (ctx.p_type, ctx.hole_index, True)
        else:
            t = hy.types[pi]
            if self.lang.kind_of(t) == "valued":
                return None
            key = (t, len(hy.kids[pi]), False)
        if key in self._only:
            return self._only[key]
        ids = np.flatnonzero(self.node_mask(ctx, hy))
        only = self._only[key] = int(ids[0]) if len(ids) == 1 else None
        return only

    def node_mask(self, ctx: Context, hy: Hyp) -> np.ndarray:
        """The node labels the grammar allows at the frontier of `hy` (EOS-node included), as a new array."""
        pi = hy.pi
        if pi < 0:
            allowed = self.child_mask(ctx.p_type, ctx.hole_index) & self.root_ok
            return allowed if allowed.any() else self.root_ok.copy()
        k = len(hy.kids[pi])
        allowed = self.child_mask(hy.types[pi], k).copy()
        allowed[self.eos_node] = self.eos_ok(hy.types[pi], k)
        return allowed

    def eos_ok(self, parent_type: str, n_children: int) -> bool:
        if self.table is None or not self.table.known(parent_type):
            return True
        return self.table.eos_allowed(parent_type, n_children)

    def _value_ok(self, type_key: str, symbol: str, later: bool) -> bool:
        k = (self.lang.base_type(type_key), symbol, later)
        v = self._value_ok_cache.get(k)
        if v is None:
            if symbol.startswith("<") and symbol.endswith(">"):
                v = False                       # padding, unknown, empty, EOS (handled apart)
            elif self.table is None:
                v = True
            else:
                v = self.table.value_ok(type_key, symbol, 1 if later else 0, self.lang)
            if len(self._value_ok_cache) < 500_000:
                self._value_ok_cache[k] = v
        return v

    def value_mask(self, ctx: Context, type_key: str, later: bool) -> np.ndarray:
        """Which of the request's symbols (the vocabulary's, then its own) may be a part of a
        `type_key` value; shared, so copy it before changing it."""
        base = self.lang.base_type(type_key)
        mask = ctx.extra_masks.get((base, later))
        if mask is None:
            vm = self._value_masks.get((base, later))
            if vm is None:
                vm = np.array([self._value_ok(type_key, s, later) for s in self.vocab.subtokens])
                self._value_masks[(base, later)] = vm
            extra = ctx.features.symbols.extra
            em = np.array([self._value_ok(type_key, s, later) for s in extra], bool)
            mask = ctx.extra_masks[(base, later)] = np.concatenate([vm, em])
        return mask

    # ------------------------------------------------------------ the context

    def prepare(self, tree: FlatTree, h: int, leaf_cache: LeafCache | None = None,
                ctx_cache: ContextCache | None = None, check: Callable[[], None] | None = None) -> Context | None:
        """Encode the context of hole h up to its parent p.  None when it has no leaves."""
        t0 = time.perf_counter()
        vocab = self.vocab
        f = context_features(tree, h, vocab, self.max_paths, self.max_length, self.file_tokens)
        N = len(f.paths.leaves)
        if N == 0:
            return None
        p = tree.parent[h]
        depth = tree.depth
        on_chain = set(tree.chain_up(p))
        up_len = np.empty(N, np.int64)            # nodes of the upward part, LCA included
        lca_depth = np.empty(N, np.int64)
        for k, prefix in enumerate(f.paths.prefixes):
            i = 0
            while prefix[i] not in on_chain:
                i += 1
            up_len[k] = i + 1
            lca_depth[k] = depth[prefix[i]]
        keys = []
        for k in range(N):
            u = int(up_len[k])
            keys.append(f.leaf_values[k].tobytes() + f.prefix_types[k, :u].tobytes() + f.prefix_index[k, :u].tobytes())
        root_keys = (f.root_types * _KEYS + np.minimum(f.root_index, MAX_CHILD_INDEX)).tobytes()
        signature = b"|".join(keys) + b"#" + lca_depth.tobytes() + b"#" + root_keys
        stats = {"leaves": N, "context_hit": False, "leaf_hits": 0, "leaf_misses": 0}
        cached = ctx_cache.get(signature) if ctx_cache is not None else None
        if cached is not None:
            H, C, z = cached
            stats["context_hit"] = True
        else:
            H, C = self._encode_context(f, keys, up_len, lca_depth, leaf_cache, stats, check)
            z = None
            if self.context_once:
                z = self.backend.contextualize(H[-1:, :N], np.ones((1, N), bool))[0]
            if ctx_cache is not None:
                ctx_cache.put(signature, (H, C, z))
        files = file_symbols = None
        if self.file_tokens:
            files, file_symbols = self._encode_files(f, H.shape[2])
        stats["file_tokens"] = len(f.file_tokens)
        stats["prepare_ms"] = (time.perf_counter() - t0) * 1e3
        key = b"|".join([signature, f"{tree.types[p]}#{tree.child_index[h]}".encode(), f.leaf_copy.tobytes(),
                         f.file_values.tobytes(), "\0".join(f.symbols.extra).encode()])
        return Context(f, N, tree.types[p], tree.child_index[h], H, C, z, files, file_symbols, stats=stats, key=key)

    def _encode_files(self, f: ContextFeatures, d: int):
        """[F, d] the file tokens encoded (their value alone, the path LSTM's first step), cached by value."""
        keys = [v.tobytes() for v in f.file_values]
        got = [self.file_cache.get(k) for k in keys]
        miss = [k for k, v in enumerate(got) if v is None]
        if miss:
            h, _ = self.backend.value_step(f.file_values[miss])
            for r, k in enumerate(miss):
                got[k] = h[-1, r].copy()
                self.file_cache.put(keys[k], got[k])
        files = np.zeros((max(len(got), 1), d), np.float32)     # a pad row when there are none
        symbols = np.full(len(files), -1, np.int64)
        if got:
            files[: len(got)] = np.stack(got)
            symbols[: len(got)] = f.file_symbols
        return files, symbols

    def _first_chain(self, ctx: Context) -> dict:
        """The chain states at p: every context leaf and the root path, or the root path alone."""
        if self.context_once:
            return {(): (ctx.H[:, ctx.n:], ctx.C[:, ctx.n:])}
        return {(): (ctx.H, ctx.C)}

    def _encode_context(self, f: ContextFeatures, keys, up_len, lca_depth, leaf_cache, stats, check):
        be = self.backend
        N = len(keys)
        miss = []
        got = {}
        for k, key in enumerate(keys):
            v = leaf_cache.get(key) if leaf_cache is not None else None
            if v is None:
                miss.append(k)
            else:
                got[k] = v
        stats["leaf_hits"], stats["leaf_misses"] = N - len(miss), len(miss)
        # upward parts of the leaves not cached: value, then one node per level, longest first
        if miss:
            m = np.array(miss)
            order = m[np.argsort(-up_len[m], kind="stable")]
            h, c = be.value_step(f.leaf_values[order])
            lens = up_len[order]
            for j in range(int(lens.max())):
                a = int((lens > j).sum())                          # rows still climbing: a prefix
                if a == 0:
                    break
                h2, c2 = be.node_step(f.prefix_types[order[:a], j], f.prefix_index[order[:a], j], h[:, :a], c[:, :a])
                h[:, :a], c[:, :a] = h2, c2
            for r, k in enumerate(order):
                got[int(k)] = (h[:, r].copy(), c[:, r].copy())
                if leaf_cache is not None:
                    leaf_cache.put(keys[k], got[int(k)])
        if check is not None:
            check()
        L = next(iter(got.values()))[0].shape[0]
        d = next(iter(got.values()))[0].shape[1]
        H = np.zeros((L, N + 1, d), np.float32)
        C = np.zeros((L, N + 1, d), np.float32)
        for k in range(N):
            H[:, k], C[:, k] = got[k]
        # down the chain to p: at depth t every row whose LCA is above t takes node t; the root path too
        start = np.concatenate([lca_depth, [-1]])
        for t in range(len(f.root_types)):
            rows = np.flatnonzero(start < t)
            if len(rows) == 0:
                continue
            ty = np.full(len(rows), f.root_types[t], np.int64)
            ix = np.full(len(rows), f.root_index[t], np.int64)
            h2, c2 = be.node_step(ty, ix, H[:, rows], C[:, rows])
            H[:, rows], C[:, rows] = h2, c2
        return H, C

    # ------------------------------------------------------------ one step for many hypotheses

    def _step_inputs(self, ctx: Context, hyps: list[Hyp], chains: dict, gen: dict):
        """Advance the chain and generated-path states the hypotheses need; the score inputs."""
        N = ctx.n
        R = 1 if self.context_once else N + 1         # rows of a chain's states; the last is the root path
        seqs = [self._generated_paths(ctx, hy) for hy in hyps]
        self._run_waves(self._waves(hyps, seqs, chains, gen), chains, gen, R)
        paths, mask, root, child, copy = self._score_batch(ctx, hyps, seqs, chains, gen, R)
        if not self.context_once:
            return paths, mask, root, child, copy
        G = paths.shape[1] - N
        z = np.zeros_like(paths)
        z[:, :N] = ctx.z
        if G:
            z[:, N:] = self.backend.contextualize(paths[:, N:], mask[:, N:])
        return paths, mask, root, child, copy, z

    def _generated_paths(self, ctx: Context, hy: Hyp) -> list:
        """Each generated leaf's path to the frontier (value + node keys) and its copy row: trie keys."""
        row = []
        if hy.leaves:
            keys = hy.keys
            parent = hy.parent
            on_stack = {n: j for j, n in enumerate(hy.stack)}
            for leaf in hy.leaves:
                # up from the leaf to the first open node, then down the stack (whose keys are
                # the suffix) to the frontier
                up = []
                n = leaf
                while n not in on_stack:
                    up.append(keys[n])
                    n = parent[n]
                val, copy = self._leaf_value(ctx, hy, leaf)
                row.append(((val, *up) + hy.suffix[on_stack[n]:], copy))
        return row

    @staticmethod
    def _waves(hyps: list[Hyp], seqs: list, chains: dict, gen: dict) -> dict[int, dict]:
        """What the LSTM must still compute, by how many steps it is from a known state."""
        # each wave is one value call (paths starting) and one node call (chains and paths growing)
        waves: dict[int, dict] = {}
        for s in {hy.suffix for hy in hyps if hy.suffix not in chains}:
            k = len(s)
            while s[:k] not in chains:
                k -= 1
            for j in range(k + 1, len(s) + 1):
                waves.setdefault(j - k, {})[s[:j]] = True
        for row in seqs:
            for seq, _ in row:
                k = len(seq)
                while k >= 1 and seq[:k] not in gen:
                    k -= 1
                for j in range(k + 1, len(seq) + 1):
                    waves.setdefault(j - k, {})[seq[:j]] = False
        return waves

    def _run_waves(self, waves: dict[int, dict], chains: dict, gen: dict, R: int) -> None:
        """Compute the waves in order, into `chains` and `gen`: one value and one node call a wave."""
        be = self.backend
        for w in sorted(waves):
            wave = waves[w]
            starts = [s for s, is_chain in wave.items() if not is_chain and len(s) == 1]
            if starts:
                h2, c2 = be.value_step(np.array([s[0] for s in starts], np.int64))
                for j, s in enumerate(starts):
                    gen[s] = (h2[:, j], c2[:, j])
            grown = [s for s in wave if wave[s]] + [s for s, is_chain in wave.items() if not is_chain and len(s) > 1]
            if not grown:
                continue
            hs, cs, node_keys = [], [], []
            for s in grown:
                if wave[s]:
                    h, c = chains[s[:-1]]
                else:
                    h, c = gen[s[:-1]]
                    h, c = h[:, None], c[:, None]
                hs.append(h)
                cs.append(c)
                node_keys += [s[-1]] * h.shape[1]
            node_keys = np.array(node_keys, np.int64)
            h2, c2 = be.node_step(node_keys // _KEYS, node_keys % _KEYS, np.concatenate(hs, 1), np.concatenate(cs, 1))
            r = 0
            for s in grown:
                if wave[s]:
                    chains[s] = (h2[:, r: r + R], c2[:, r: r + R])
                    r += R
                else:
                    gen[s] = (h2[:, r], c2[:, r])
                    r += 1

    def _score_batch(self, ctx: Context, hyps: list[Hyp], seqs: list, chains: dict, gen: dict, R: int):
        """The score inputs of the batch from the computed states: paths, mask, root, child index, copy rows."""
        N = ctx.n
        B = len(hyps)
        G = max((len(r) for r in seqs), default=0)
        d = ctx.H.shape[2]
        P = N + G
        K = ctx.features.leaf_copy.shape[1]
        paths = np.zeros((B, P, d), np.float32)
        mask = np.zeros((B, P), bool)
        root = np.zeros((B, d), np.float32)
        child = np.zeros(B, np.int64)
        copy = np.full((B, P, K), -1, np.int64)
        copy[:, :N] = ctx.features.leaf_copy
        for b, (hy, row) in enumerate(zip(hyps, seqs)):
            Hs = chains[hy.suffix][0]
            paths[b, :N] = ctx.H[-1, :N] if self.context_once else Hs[-1, :N]
            root[b] = Hs[-1, R - 1]
            mask[b, : N + len(row)] = True
            for g, (seq, cp) in enumerate(row):
                paths[b, N + g] = gen[seq][0][-1]
                copy[b, N + g] = cp
            pi = hy.pi
            if pi < 0:
                child[b] = ctx.hole_index
            elif self.lang.kind_of(hy.types[pi]) == "valued":
                child[b] = len(hy.parts[pi])
            else:
                child[b] = len(hy.kids[pi])
        np.minimum(child, MAX_CHILD_INDEX, out=child)
        return paths, mask, root, child, copy

    def _leaf_value(self, ctx: Context, hy: Hyp, leaf: int) -> tuple[tuple[int, ...], np.ndarray]:
        t = hy.types[leaf]
        parts = tuple(hy.parts[leaf] or ()) if self.lang.kind_of(t) == "valued" else ()
        key = (t, parts)
        v = ctx.leaf_info.get(key)
        if v is None:
            subs = value_subtokens(self.lang, t, list(parts)) if self.lang.kind_of(t) == "valued" else [EMPTY]
            ids = value_ids(self.vocab, subs)
            ids = tuple(ids + [0] * (MAX_VALUE_SUBTOKENS - len(ids)))
            token, csubs = generated_leaf_value(self.lang, t, list(parts))
            v = ctx.leaf_info[key] = (ids, np.array(copy_row(ctx.features.symbols, token, csubs), np.int64))
        return v

    def distributions(self, ctx: Context, hyps: list[Hyp], chains: dict, gen: dict):
        x = self._step_inputs(ctx, hyps, chains, gen)
        if ctx.files is not None:
            node_lp, value_lp = self.backend.score(*x, files=ctx.files, file_symbols=ctx.file_symbols)
        else:
            node_lp, value_lp = self.backend.score(*x)
        return node_lp, value_lp[:, : len(ctx.features.symbols)]

    # ------------------------------------------------------------ applying a step

    def apply(self, hy: Hyp, label: str, logp: float, ctx: Context) -> Hyp:
        """The hypothesis after one step labelled `label` (a type, EOS-node, a value part, EOS-token)."""
        n = hy.copy()
        n.logp = hy.logp + logp
        n.nsteps += 1
        pi = hy.pi
        vocab = self.vocab
        if pi >= 0 and self.lang.kind_of(hy.types[pi]) == "valued":
            if label == EOS_TOK:
                n.stack.pop()
                n.suffix = n.suffix[:-1]
            else:
                n.parts[pi] = n.parts[pi] + [label]
            return n
        if label == EOS_NODE:
            x = n.stack.pop()
            n.suffix = n.suffix[:-1]
            if not n.kids[x]:
                n.leaves.append(x)
            if x == 0:
                n.done = True
            return n
        i = len(n.types)
        n.types.append(label)
        n.parent.append(pi)
        if pi < 0:
            n.cindex.append(ctx.hole_index)
        else:
            n.cindex.append(len(n.kids[pi]))
            n.kids[pi] = n.kids[pi] + [i]
        n.keys.append(_key(vocab.type_of(label), n.cindex[i]))
        n.kids.append([])
        kind = self.lang.kind_of(label)
        n.parts.append([] if kind == "valued" else None)
        if kind == "nonterminal" or kind == "valued":
            n.stack.append(i)
            n.suffix = n.suffix + (n.keys[i],)
        if kind != "nonterminal":
            n.leaves.append(i)
            if pi < 0 and kind == "fixed":
                n.done = True
        return n

    def _closing_cost(self, hy: Hyp) -> int:
        """About how many steps closing every open node takes: a value's EOS-token, and for each
        nonterminal the children its smallest seen arity still needs (four steps each: a terminal,
        its value, EOS-token, and one to spare for children that must be nonterminals) and its EOS-node."""
        cost = 0
        for x in hy.stack:
            key = (hy.types[x], len(hy.kids[x]))
            c = self._closing.get(key)
            if c is None:
                c = self._closing[key] = self._node_closing_cost(*key)
            cost += c
        return cost

    def _node_closing_cost(self, t: str, k: int) -> int:
        if self.lang.kind_of(t) == "valued":
            return 1
        need = 0
        if self.table is not None and self.table.known(t):
            arities = [a for a in self.table.arities.get(t, ()) if a >= k]
            need = min(arities) - k if arities else 0
        return 4 * need + 1

    def first_tokens(self, t: str) -> frozenset | None:
        """The tokens a subtree of type `t` may print first, as prefix.Prefix.starts takes them: its
        leading text's first token, else (a value, or a type that begins with a child) what the
        grammar table allows as its first child may print first.  None: anything."""
        got = self._first.get(t, False)
        if got is not False:
            return got
        self._first[t] = frozenset()           # a cycle (`a.b` begins with an attribute) adds nothing
        lead = leading_text(t, self.lang)
        if lead is None:
            out = None
        elif lead.strip():
            out = frozenset({("text", self.lang.tokens(lead)[0].text)})
        elif self.lang.kind_of(t) == "valued":
            out = frozenset({("value", t)})
        elif self.table is None or not self.table.known(t):
            out = None
        else:
            acc: set = set()
            out = None
            for c in self.table.allowed_children(t, 0):
                f = self.first_tokens(c)
                if f is None:
                    break
                acc |= f
            else:
                out = frozenset(acc)
        self._first[t] = out
        return out

    def _left_kinds(self, t: str, prefix: Prefix) -> frozenset:
        """prefix.kind of every type a subtree of type `t` may begin with (itself, and down the first
        children of types that print nothing before them)."""
        key = (t, prefix.anchor, prefix.tokens[-1], prefix.partial)
        got = self._left.get(key)
        if got is None:
            seen, todo, kinds = {t}, [t], set()
            while todo:
                x = todo.pop()
                kinds.add(prefix.kind(x))
                if leading_text(x, self.lang) == "" and self.table is not None and self.lang.kind_of(x) == "nonterminal":
                    for c in self.table.allowed_children(x, 0):
                        if c not in seen:
                            seen.add(c)
                            todo.append(c)
            got = self._left[key] = frozenset(kinds)
        return got

    def _anchored(self, n: Hyp, prefix: Prefix) -> bool:
        """Does the tree of `n`, whose newest node is the one just opened, still have room for a node
        of the typed start's kind (prefix.anchor) where the expression begins?  Only nodes at the start
        are asked: the root and the first children of nodes that print nothing before them."""
        i = len(n.types) - 1
        chain = [i]
        while n.parent[chain[-1]] >= 0:
            q = n.parent[chain[-1]]
            if n.cindex[chain[-1]] != 0 or leading_text(n.types[q], self.lang) != "":
                return True                 # the new node is not at the start: nothing to ask
            chain.append(q)
        if any(prefix.kind(n.types[q]) == prefix.anchor for q in chain[1:]):
            return True
        return prefix.anchor in self._left_kinds(n.types[i], prefix)

    def _agrees(self, ctx: Context, hy: Hyp, label: str, logp: float, prefix: Prefix) -> Hyp | None:
        """`hy` expanded by `label` (not yet past the typed prefix) where the result still agrees with
        the typed start, else None; value parts are masked by `_typed_symbols` already, every other
        step is checked on the text it commits."""
        pi = hy.pi
        spelling = pi >= 0 and self.lang.kind_of(hy.types[pi]) == "valued"
        n = self.apply(hy, label, logp, ctx)
        if spelling and label != EOS_TOK:
            n.progress = (hy.progress[0], len(self.lang.join_value(hy.types[pi], n.parts[pi])))
            return n
        opened = not spelling and label != EOS_NODE
        if opened and prefix.anchor and not self._anchored(n, prefix):
            ctx.stats["pruned_typed"] += 1
            return None
        state, at = typed_state(n, prefix)
        if state == INCONSISTENT or (n.done and state != COVERED) or (
                state == CONSISTENT and at is not None and opened and leading_text(label, self.lang) == ""
                and not prefix.starts(at, self.first_tokens(label))):
            ctx.stats["pruned_typed"] += 1
            return None
        n.covered = state == COVERED
        if n.covered:
            n.progress = (len(prefix.tokens), 0)
        elif at is not None:
            n.progress = (at, 0)
        return n

    def _answer(self, ctx: Context, hy: Hyp, prefix: Prefix, frame: tuple[str, str]) -> Finished | None:
        """The finished tree of `hy` as an answer (its node and printed text), or None where it is
        not one: a tree that does not print, or whose text does not parse as one expression where it
        will be written, one the language calls redundant (`a and a`, `words.get(words)`), or, under
        a typed start, one that does not print the typed text.  What is not an answer is not counted
        among the finished, whose best `keep` bound the search and whose first ends it at the soft
        deadline, so it leaves its place to the next tree.  The answer is judged as it will be
        written: the start as typed (where a string stood for a typed one, `"Tk" in m or "Tk" in m`
        is written `"Tk" in m or "tk" in m`, which is no repetition), inside its `frame` (the
        operand `a` after a typed `a and ` is a repetition)."""
        lead, closers = frame
        try:
            node = build_node(hy, self.lang)
            text = self.lang.print_node(node)
        except (Unprintable, IndexError, StopIteration):
            ctx.stats["unparsable"] += 1
            return None
        if prefix and not prefix.adds(text):
            return None
        written = self.lang.parse_expression(lead + (prefix.respell(text) if prefix else text) + closers)
        if written is None:
            ctx.stats["unparsable"] += 1
            return None
        if self.lang.redundant(written):
            ctx.stats["redundant"] += 1
            return None
        return Finished(hy.logp, hy, node, text)

    def _doomed(self, ctx: Context, before: Hyp, hy: Hyp, prefix: Prefix) -> bool:
        """Has the step from `before` to `hy` closed a part that makes every completion of `hy` one the
        language calls redundant?  `words.get(words, ` is, once the argument `words` is closed, whatever
        follows (`Language.redundant` holds of every completion of a partial tree where it holds of
        the tree with its open nodes stood in for), so such a hypothesis would hold a beam slot only
        to be refused as an answer at the end, and a search whose beam the model fills with them
        ends with none.  Not judged where a string stands for a typed one: that is judged as written
        (`_answer`)."""
        closed = len(hy.stack) < len(before.stack) or (
            len(hy.types) > len(before.types) and self.lang.kind_of(hy.types[-1]) == "fixed")
        if not closed or (prefix and prefix.any_string):
            return False
        try:
            node = build_node(hy, self.lang, open_fill=True)
        except (IndexError, StopIteration):
            return False
        if self.lang.redundant(node):
            ctx.stats["redundant"] += 1
            return True
        return False

    def _typed_symbols(self, ctx: Context, hy: Hyp, prefix: Prefix, row: np.ndarray) -> np.ndarray | None:
        """Which value parts keep the frontier terminal's text in agreement with the typed token it
        prints as (None: any, no typed token is left there).  Of a string standing for a typed one
        (Prefix.any_string), only the likeliest part (`row`: the parts' log-probabilities): which
        string stands there changes nothing in the answer, which writes the typed one, and several
        would fill the beam with trees that all write the same answer."""
        pi = hy.pi
        t = hy.types[pi]
        tmp = hy.copy()
        tmp.parts[pi] = []
        before = committed_text(tmp, self.lang)
        if before is None:
            return None
        index = len(self.lang.typed_tokens(before)[0])
        if index >= len(prefix.tokens):
            return None
        typed = prefix.tokens[index]
        parts = hy.parts[pi] or []
        if prefix.any_string and index in prefix.strings:
            strings = self._string_symbols(ctx, t, parts, prefix, index)
            best = np.zeros(len(strings), bool)
            if strings.any():
                best[int(np.argmax(np.where(strings, row, NEG_INF)))] = True
            return best
        so_far = self.lang.join_value(t, parts) if parts else ""
        partial = prefix.partial and index == len(prefix.tokens) - 1
        if partial and len(so_far) >= len(typed):
            return None
        symbols = ctx.features.symbols
        n = len(symbols)
        mask = np.zeros(n, bool)
        rest = typed[len(so_far):] if typed.startswith(so_far) else ""
        if not rest:
            return mask                  # the value is whole (EOS-token) or already disagrees
        first = ctx.extra_masks.get("first_char")
        if first is None:
            first = {}
            for i in range(n):
                s = symbols.string(i)
                if s:
                    first.setdefault(s[0], []).append(i)
            ctx.extra_masks["first_char"] = first
        heads = {rest[0]}
        if parts and rest[0] == "_" and len(rest) > 1:
            heads.add(rest[1])          # the joiner may put the underscore between subtokens
        for c in heads:
            for i in first.get(c, ()):
                mask[i] = bool(prefix.value_fits(index, self.lang.join_value(t, parts + [symbols.string(i)])))
        return mask

    def _string_symbols(self, ctx: Context, t: str, parts: list[str], prefix: Prefix, index: int) -> np.ndarray:
        """Which value parts may spell a string standing for the one being typed (Prefix.any_string):
        any that keeps the value a string, whatever it says (the answer writes the typed one)."""
        key = ("any_string", t, tuple(parts))
        mask = ctx.extra_masks.get(key)
        if mask is None:
            symbols = ctx.features.symbols
            mask = np.array([bool(symbols.string(i)) and bool(
                prefix.value_fits(index, self.lang.join_value(t, parts + [symbols.string(i)])))
                for i in range(len(symbols))], bool)
            ctx.extra_masks[key] = mask
        return mask

    # ------------------------------------------------------------ beam search

    # expansions of one hypothesis under a typed start tried against it, at most
    MAX_TRIES = 256

    def search(self, ctx: Context, beam_size: int = 5, typed: str | Prefix = "", *, max_steps: int = MAX_STEPS,
               soft_steps: int = SOFT_STEPS, max_depth: int = MAX_DEPTH, check: Callable[[], None] | None = None,
               keep: int | None = None, closing: Callable[[], bool] | None = None,
               close_steps: int = 24, memo: ScoreMemo | None = None, yield_late: bool = False,
               frame: tuple[str, str] = ("", "")) -> list[Finished]:
        """Finished hypotheses, best first.  `check()` is called between steps: it may raise
        (cancellation) or raise `Stopped` (the hard deadline), which ends the search with what is
        finished.  `closing()` returning True (the soft deadline) ends it too when something is
        finished; when nothing is, the search goes on from the best hypothesis alone (one hypothesis
        wide; under a typed start, from the best of each amount of it printed, `_anytime`,
        `CLOSING_WIDTH` of each amount wide), every open node of a hypothesis past the typed start
        closed as soon as the grammar allows, for at most `close_steps` steps, so that a late
        request still answers; with `yield_late`, a search under a typed start that no hypothesis has
        printed whole by then ends there too, leaving the time to the caller's next search (an
        operand's own hole: `Hole.fallback`).  `memo`:
        network outputs of earlier requests in the same context, reused for the hypotheses that come
        back, and this request's added to it.  `typed`: the typed start of the expression
        (prefix.py); only hypotheses that agree with it are kept, and until one prints it whole its
        expansions are taken best first among those that agree.  `frame`: the typed text before the
        hole's own start that every answer repeats, and what closes it (`Hole.lead`, `Hole.closers`:
        `x and ` + the operand), which an answer is judged with (`_answer`)."""
        keep = keep or beam_size
        if memo is not None:
            memo.use(ctx.key)
        live = [Hyp()]
        finished: list[Finished] = []
        chains = self._first_chain(ctx)
        gen: dict = {}
        stats = ctx.stats
        stats.update(steps=0, expansions=0, pruned_typed=0, redundant=0, unparsable=0)
        prefix = typed if isinstance(typed, Prefix) else Prefix(typed, lang=self.lang)
        bounds = (max_steps, soft_steps, max_depth)
        closing_from = None
        for step in range(max_steps):
            if check is not None:
                try:
                    check()
                except Stopped:
                    stats["stopped"] = True
                    break
            if closing_from is None and closing is not None and closing():
                if finished or (yield_late and prefix and not any(hy.covered for hy in live)):
                    stats["stopped"] = True
                    break
                closing_from = stats["closing_from"] = step
                live, beam_size = self._anytime(live, prefix), min(beam_size, CLOSING_WIDTH) if prefix else 1
            if closing_from is not None and step - closing_from >= close_steps:
                stats["stopped"] = True
                break
            only = [self.only_label(ctx, hy) for hy in live]
            rows = self._network_rows(ctx, live, only, chains, gen, memo)
            stats["steps"] += 1
            cands = heapq.merge(*(self._expansions(ctx, hy, b, only[b], rows.get(b), prefix, beam_size,
                                                   closing_from is not None, bounds)
                                  for b, hy in enumerate(live)), key=_by_score)
            live = self._select(ctx, cands, live, finished, beam_size, keep, prefix, frame)
            if not live:
                break
            # drop chain states no live beam can return to
            alive = {hy.suffix[:k] for hy in live for k in range(len(hy.suffix) + 1)}
            for s in [s for s in chains if s not in alive]:
                del chains[s]
        finished.sort(key=lambda f: -f.logp)
        stats["finished"] = len(finished)
        return finished

    @staticmethod
    def _anytime(live: list[Hyp], prefix: Prefix) -> list[Hyp]:
        """The hypotheses that go on once the soft deadline has passed with nothing finished: the best
        alone, and under a typed start the best of each amount of it printed (`Hyp.progress`), since
        the best of all is mostly one that has printed less of it and cannot finish before it has.
        Those that have printed it all are steered closed; the others still need steps to print the
        rest (`CLOSING_WIDTH` of each amount go on)."""
        if not prefix:
            return live[:1]
        best: dict = {}
        for hy in live:                       # live is best first
            best.setdefault(hy.progress, hy)
        return sorted(best.values(), key=lambda hy: (not hy.covered, -hy.progress[0], -hy.progress[1]))

    def _network_rows(self, ctx: Context, live: list[Hyp], only: list, chains: dict, gen: dict,
                      memo: ScoreMemo | None) -> dict:
        """beam index -> (node log-probabilities, value log-probabilities) for the beams whose next
        step the grammar leaves open (`only` None), from `memo` where it has them, else from one
        network call for them all (added to `memo`)."""
        rows = {}
        asked = [b for b, o in enumerate(only) if o is None]
        if memo is not None:
            keys = {b: live[b].structure() for b in asked}
            for b in asked:
                got = memo.rows.get(keys[b])
                if got is not None:
                    rows[b] = got
            memo.hits += len(rows)
            asked = [b for b in asked if b not in rows]
            memo.misses += len(asked)
        if asked:
            node_lp, value_lp = self.distributions(ctx, [live[b] for b in asked], chains, gen)
            for r, b in enumerate(asked):
                rows[b] = (node_lp[r], value_lp[r])
                if memo is not None:
                    memo.rows[keys[b]] = (node_lp[r].copy(), value_lp[r].copy())
        return rows

    def _expansions(self, ctx: Context, hy: Hyp, b: int, only: int | None, row, prefix: Prefix, width: int,
                    closing: bool, bounds: tuple[int, int, int]):
        """The candidate steps of beam `b`, best first: (score, b, label, log-probability, typed).
        `typed` > 0: `hy` has not printed the typed start yet, and the step is still to be checked
        against it (`_select` does, in score order, taking `typed` steps of `hy` at most that agree):
        most of the steps tried are never checked, the beam being full before the search reaches them."""
        typed = width if prefix and not hy.covered else 0
        if only is not None:
            return iter([(hy.logp, b, self.vocab.node_types[only], 0.0, min(typed, 1))])
        lp, labels = self._masked(ctx, hy, row, prefix, closing and (hy.covered or not prefix), bounds)
        return _ranked(hy, b, lp, labels, self.MAX_TRIES if typed else width, typed)

    def _masked(self, ctx: Context, hy: Hyp, row, prefix: Prefix, closing: bool,
                bounds: tuple[int, int, int]) -> tuple[np.ndarray, Callable[[int], str]]:
        """The log-probabilities of the next step of `hy` (`row`: the network's), -inf where the
        grammar, the value shapes, the typed start or the search's bounds rule it out; and the label
        of each index.  Past `soft_steps`, near `max_steps` or `closing`, nodes close as soon as
        they can and values take no more parts; at `max_depth` no node opens a nonterminal."""
        max_steps, soft_steps, max_depth = bounds
        node_row, value_row = row
        pi = hy.pi
        forced = closing or hy.nsteps >= soft_steps or hy.nsteps + self._closing_cost(hy) + 2 >= max_steps
        if pi >= 0 and self.lang.kind_of(hy.types[pi]) == "valued":
            nsym = len(ctx.features.symbols)
            j = len(hy.parts[pi])
            if j >= MAX_VALUE_PARTS or (forced and j > 0):
                allowed = np.zeros(nsym, bool)
            else:
                allowed = self.value_mask(ctx, hy.types[pi], j > 0).copy()
            allowed[self.eos_tok] = j > 0
            if prefix and not hy.covered:
                fits = self._typed_symbols(ctx, hy, prefix, np.where(allowed, value_row, NEG_INF))
                if fits is not None:
                    allowed &= fits | (np.arange(nsym) == self.eos_tok)
            return np.where(allowed, value_row, NEG_INF), ctx.features.symbols.string
        allowed = self.node_mask(ctx, hy)
        if pi >= 0 and (forced or len(hy.stack) >= max_depth):
            if allowed[self.eos_node]:              # close the node now
                allowed[:] = False
                allowed[self.eos_node] = True
            elif (allowed & self.terminal).any():   # else end the branch with a terminal
                allowed &= self.terminal
        return np.where(allowed, node_row, NEG_INF), self.vocab.node_types.__getitem__

    def _select(self, ctx: Context, cands, live: list[Hyp], finished: list[Finished],
                beam_size: int, keep: int, prefix: Prefix, frame: tuple[str, str]) -> list[Hyp]:
        """The next beam from one step's candidates (score, beam index, label, log-probability,
        typed; best first, as `_expansions` gives them), best first; those that finish go to
        `finished`.  What scores below the keep-th finished can never enter the answer
        (log-probabilities only fall), so it takes no beam slot.  Under a typed start, hypotheses
        compete only with those that printed as much of it (grid beam search): each amount printed
        (Hyp.progress) keeps `beam_size` of its own, up to `beam_size` times the typed tokens + 1 in
        all.  In one beam, trees that open cheap nodes (`x.strip().strip()...` around the typed start)
        before spelling its costly names push out those that spelled them, and nothing short is left
        to finish.  Once a hypothesis has printed the typed start whole (one of the beam before this
        step, or one finished), only those that have printed it go on: the others had their step to
        catch up (a call's tree prints `f.get` one step after an attribute's), and the constraint
        then prunes the search to one beam (docs/bench.md, "Typing along through LSP", has the
        accuracy and cost of both)."""
        floor = finished[keep - 1].logp if len(finished) >= keep else NEG_INF
        levels = len(prefix.tokens) + 1 if prefix else 1
        printed = bool(prefix) and (bool(finished) or any(hy.covered for hy in live))
        per_level: dict[tuple[int, int], int] = {}
        agreed: dict[int, int] = {}     # beam index -> its steps checked against the typed start that agree
        new_live = []
        for score, b, label, lp, typed in cands:
            if len(new_live) >= beam_size * levels or score < floor:
                break
            n = None
            if typed:
                if agreed.get(b, 0) >= typed:
                    continue
                n = self._agrees(ctx, live[b], label, lp, prefix)
                if n is None:
                    continue
                agreed[b] = agreed.get(b, 0) + 1
            if printed and not (live[b] if n is None else n).covered:
                continue
            if levels > 1:
                level = live[b].progress if n is None else n.progress
                if per_level.get(level, 0) >= beam_size:
                    continue
                per_level[level] = per_level.get(level, 0) + 1
            if n is None:
                n = self.apply(live[b], label, lp, ctx)
            ctx.stats["expansions"] += 1
            if not n.done:
                if self._doomed(ctx, live[b], n, prefix):
                    if levels > 1:
                        per_level[level] -= 1       # its place goes to the next of its level
                    continue
                new_live.append(n)
            elif (answer := self._answer(ctx, n, prefix, frame)) is not None:
                finished.append(answer)
        if len(finished) >= keep:
            finished.sort(key=lambda f: -f.logp)
            new_live = [hy for hy in new_live if hy.logp >= finished[keep - 1].logp]
        return new_live

    # ------------------------------------------------------------ teacher forcing (tests, evaluation)

    def score_target(self, ctx: Context, tree: FlatTree, h: int) -> tuple[list, np.ndarray]:
        """Log-probability of every step of the true target, through the same machinery."""
        steps = target_steps(tree, h, ctx.features.whole_tokens)
        hy = Hyp()
        chains = self._first_chain(ctx)
        gen: dict = {}
        out = np.empty(len(steps))
        symbols = ctx.features.symbols
        for t, s in enumerate(steps):
            node_lp, value_lp = self.distributions(ctx, [hy], chains, gen)
            if s.is_value:
                sid = symbols.id(s.label)
                out[t] = value_lp[0, UNK_SYMBOL if sid is None else sid]
            else:
                out[t] = node_lp[0, self.vocab.type_of(s.label)]
            hy = self.apply(hy, s.label, float(out[t]), ctx)
        return steps, out


UNK_SYMBOL = 1      # the id of UNK among the subtokens (vocab.SUBTOKEN_SPECIALS), as batching labels unknown values


def _by_score(cand: tuple) -> float:
    return -cand[0]


def _ranked(hy: Hyp, b: int, lp: np.ndarray, labels: Callable[[int], str], limit: int, typed: int):
    """The steps of `hy` (beam `b`) whose log-probability `lp` is not -inf, best first, `limit` at most,
    as search candidates (`Decoder._expansions`)."""
    k = min(limit, int(np.count_nonzero(lp > NEG_INF)))
    if k == 0:
        return
    order = np.argpartition(-lp, k - 1)[:k] if k < len(lp) else np.arange(len(lp))
    order = order[np.argsort(-lp[order], kind="stable")]
    for i in order:
        logp = float(lp[i])
        yield hy.logp + logp, b, labels(int(i)), logp, typed
