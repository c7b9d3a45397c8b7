"""`anycode eval`: beam search over trees, metrics, baselines, docs/model.md.

    anycode eval --model RUN_DIR_OR_SHIPPED_DIR --data DIR --split test [--limit N] [--beam 5]
                 [--out docs/model.md]

Decoding (paper sections 2-3, 4.3): node by node in depth-first order.  The
first step expands the hole's parent p at the hole's child index; a
nonterminal's children follow until EOS-node; a valued terminal's value parts
(a whole token or subtokens, from the example's symbols) follow until
EOS-token.  Each step reads the same S_t and R_t as training: the context
leaves' states at p (from `SLM.encode`, once per example) advanced with
`SLM.lstm_step` down to pi_t, plus the paths from the leaves generated so far,
encoded whole.  Hypotheses of many examples run as one batch.

When the data directory has grammar.json (model/grammar_table.py), node steps
are limited to the children seen for (parent type, child index), EOS-node to
the child counts seen, and values to the shapes of their type.  The first node
is always one of the hole expression types (grammar.EXPRESSION_TYPES).

A finished tree is printed with grammar.print_node; candidates whose text does
not re-parse as one expression are dropped.  Metrics compare printed code
(whitespace-insensitive), tree shapes (tree@k: `Node.shape` of the re-parsed
candidate against the truth's) and allow one subtoken of difference.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch

from anycode.grammars import python as grammar
from anycode.model.features import context_features, copy_row, generated_leaf_value, value_ids
from anycode.model.paths import FlatTree, path_between
from anycode.model.vocab import EOS_NODE, EOS_TOK, MAX_CHILD_INDEX, Vocab

try:  # the table is someone else's module; decoding works without it
    from anycode.model.grammar_table import GrammarTable
except ImportError:  # pragma: no cover
    GrammarTable = None

MAX_STEPS = 80           # decoding steps per hypothesis
MAX_NODES = 48           # nodes of one generated tree
MAX_PARTS = 8            # value parts of one terminal
PAPER_JAVA = {"acc@1": 18.04, "acc@5": 24.83, "tree@1": 39.10, "tree@5": 55.32,
              "subtoken@1": 24.40, "subtoken@5": 35.19}


# ---------------------------------------------------------------- trees and text


def with_fields(node: grammar.Node) -> grammar.Node:
    """Field names the printer needs and flat trees do not keep: a for_in_clause is
    `for <left> in <right>, ...`."""
    if grammar.base_type(node.type) == "for_in_clause":
        for j, c in enumerate(node.children):
            c.field = "left" if j == 0 else "right"
    return node


def subtree_node(tree: FlatTree, i: int) -> grammar.Node:
    return with_fields(grammar.Node(tree.types[i], [subtree_node(tree, c) for c in tree.children(i)], tree.values[i]))


def print_or_none(node: grammar.Node) -> str | None:
    try:
        return grammar.print_node(node)
    except (grammar.Unprintable, IndexError, StopIteration):
        return None


_WS = re.compile(r"\s+")


def code_key(text: str) -> str:
    return _WS.sub("", text)


def same_code(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and code_key(a) == code_key(b)


def truth_code(tree: FlatTree, h: int) -> str | None:
    return print_or_none(subtree_node(tree, h))


def leaf_subtokens(node: grammar.Node) -> list[list[str]]:
    out = []
    for n in node.walk():
        if not n.children:
            out.append(grammar.subtokens(n.type, n.value) if n.value is not None else [])
    return out


def _edit(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def subtoken_diff(a: grammar.Node, b: grammar.Node) -> int | None:
    """Subtoken edits between two trees of one shape; None when the shapes differ."""
    if a.shape() != b.shape():
        return None
    return sum(_edit(x, y) for x, y in zip(leaf_subtokens(a), leaf_subtokens(b)))


# ---------------------------------------------------------------- decoding


@dataclass
class Candidate:
    code: str | None          # printed; None when the tree does not print
    logp: float
    tree: grammar.Node        # as generated
    parsed: grammar.Node | None  # the printed code parsed back; None when it does not parse


class _Example:
    """What decoding needs of one example, computed once."""

    def __init__(self, model, vocab, tree: FlatTree, h: int, device, max_paths, max_length):
        self.tree, self.h = tree, h
        f = context_features(tree, h, vocab, max_paths, max_length, model.cfg.file_tokens)
        self.f = f
        self.symbols = f.symbols
        self.n = len(f.paths.leaves)
        self.p_type = tree.types[tree.parent[h]]
        self.hole_index = tree.child_index[h]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
        if self.n:
            hc, cc = model.encode(model.embed_value(t(f.leaf_values)), t(f.prefix_types), t(f.prefix_index),
                                  t(f.prefix_len))
        else:
            hc = cc = torch.zeros(model.cfg.lstm_layers, 0, model.cfg.d_lstm, device=device)
        hr, cr = model.encode(None, t(f.root_types)[None], t(f.root_index)[None],
                              torch.tensor([len(f.root_types)], device=device))
        self.state0 = (torch.cat([hc, hr], 1), torch.cat([cc, cr], 1))   # [layers, N + 1, d]
        if model.cfg.context_once:          # the context set: paths to p, contextualized once
            self.ctx_top = hc[-1]
            self.z_ctx = model.contextualize(self.ctx_top[None], torch.ones(1, self.n, dtype=torch.bool,
                                                                             device=device))[0]
        self.leaf_copy = t(f.leaf_copy)
        self.files = model.encode_file_tokens(t(f.file_values)) if len(f.file_symbols) else None   # [F, d_lstm]
        self.file_symbols = t(f.file_symbols)
        self.value_masks: dict = {}


class _Hyp:
    __slots__ = ("ex", "logp", "types", "parent", "cidx", "kids", "parts", "leaves", "stack", "states", "steps")

    def __init__(self, ex: int, state0):
        self.ex, self.logp = ex, 0.0
        self.types: list[str] = []
        self.parent: list[int] = []
        self.cidx: list[int] = []
        self.kids: list[list[int]] = []
        self.parts: list[list[str] | None] = []
        self.leaves: list[int] = []          # in the order they became leaves
        self.stack: list[int] = [-1]         # -1: the hole's parent p
        self.states = {-1: state0}
        self.steps = 0

    def fork(self) -> "_Hyp":
        o = _Hyp.__new__(_Hyp)
        o.ex, o.logp, o.steps = self.ex, self.logp, self.steps
        o.types, o.parent, o.cidx = list(self.types), list(self.parent), list(self.cidx)
        o.kids = [list(k) for k in self.kids]
        o.parts = [None if p is None else list(p) for p in self.parts]
        o.leaves, o.stack, o.states = list(self.leaves), list(self.stack), dict(self.states)
        return o

    def path(self, a: int, b: int) -> list[int]:
        return path_between(self.parent, a, b)

    def node(self, i: int = 0) -> grammar.Node:
        t = self.types[i]
        value = None
        if grammar.kind_of(t) == "valued":
            value = grammar.join_value(t, self.parts[i]) if self.parts[i] else ""
        return with_fields(grammar.Node(t, [self.node(c) for c in self.kids[i]], value))


class Decoder:
    def __init__(self, model, vocab: Vocab, table=None, device="cpu", max_paths=200, max_length=24):
        self.model, self.vocab, self.device = model, vocab, torch.device(device)
        self.table = table
        self.rules = table if table is not None else (GrammarTable.empty() if GrammarTable else None)
        self.max_paths, self.max_length = max_paths, max_length
        self.n_types = len(vocab.node_types)
        self.eos_node = vocab.type_id[EOS_NODE]
        base = torch.ones(self.n_types, dtype=torch.bool)
        base[:2] = False                                   # padding, unknown
        self.any_child = base
        first = torch.zeros(self.n_types, dtype=torch.bool)
        for t, i in vocab.type_id.items():
            if grammar.base_type(t) in grammar.EXPRESSION_TYPES:
                first[i] = True
        self.hole_types = first
        self._child_masks: dict = {}

    # ------------------------------------------------------------ constraints

    def child_mask(self, parent_type: str, index: int, n_children: int, first: bool) -> torch.Tensor:
        key = (parent_type, index, n_children, first)
        m = self._child_masks.get(key)
        if m is not None:
            return m
        m = self.any_child.clone()
        known = self.table is not None and self.table.known(parent_type)
        if known:
            m[:] = False
            for t in self.table.allowed_children(parent_type, index):
                i = self.vocab.type_id.get(t)
                if i is not None and i > 1:
                    m[i] = True
        if first:
            m[self.eos_node] = False
            m &= self.hole_types
            if not m.any():
                m = self.hole_types.clone()
        else:
            m[self.eos_node] = self.table.eos_allowed(parent_type, n_children) if known else True
            if not m.any():
                m[self.eos_node] = True
        self._child_masks[key] = m = m.to(self.device)
        return m

    def value_mask(self, ex: _Example, type_key: str, position: int) -> torch.Tensor:
        key = (type_key, min(position, 1), position >= MAX_PARTS)
        m = ex.value_masks.get(key)
        if m is not None:
            return m
        n = len(ex.symbols)
        if position >= MAX_PARTS:
            ok = [ex.symbols.string(i) == EOS_TOK for i in range(n)]
        elif self.rules is not None:
            ok = [self.rules.value_ok(type_key, ex.symbols.string(i), position) for i in range(n)]
        else:
            ok = [(s == EOS_TOK and position > 0) or (s != EOS_TOK and not s.startswith("<"))
                  for s in map(ex.symbols.string, range(n))]
        m = torch.tensor(ok, dtype=torch.bool)
        if not m.any():
            m[self.vocab.sub_id[EOS_TOK]] = True
        ex.value_masks[key] = m = m.to(self.device)
        return m

    # ------------------------------------------------------------ one step for many hypotheses

    @torch.no_grad()
    def step_scores(self, hyps: list[_Hyp], exs: list[_Example]):
        """Log-probabilities (constrained: -inf where not allowed) for each hypothesis' next step."""
        model, dev = self.model, self.device
        B = len(hyps)
        info, gen_rows = [], []
        for k, hy in enumerate(hyps):
            ex = exs[hy.ex]
            pi = hy.stack[-1]
            if pi == -1:
                ptype, is_value, child = ex.p_type, False, ex.hole_index
            else:
                ptype = hy.types[pi]
                is_value = grammar.kind_of(ptype) == "valued"
                child = min(len(hy.parts[pi]) if is_value else len(hy.kids[pi]), MAX_CHILD_INDEX)
            gens = []
            if pi != -1:
                for leaf in hy.leaves:
                    q = hy.path(leaf, pi)
                    token, subs = generated_leaf_value(hy.types[leaf], hy.parts[leaf] or [])
                    gens.append(len(gen_rows))
                    gen_rows.append((value_ids(self.vocab, subs),
                                     [self.vocab.type_of(hy.types[i]) for i in q], [hy.cidx[i] for i in q],
                                     copy_row(ex.symbols, token, subs)))
            info.append((pi, ptype, is_value, child, gens))
        # generated-leaf paths, encoded whole
        if gen_rows:
            G = len(gen_rows)
            L = max(len(r[1]) for r in gen_rows)
            gv = np.zeros((G, 8), np.int64)
            gt = np.zeros((G, L), np.int64)
            gi = np.zeros((G, L), np.int64)
            gl = np.zeros(G, np.int64)
            for g, (v, ty, ix, _) in enumerate(gen_rows):
                gv[g, : len(v)] = v
                gt[g, : len(ty)] = ty
                gi[g, : len(ix)] = ix
                gl[g] = len(ty)
            t = lambda a: torch.from_numpy(a).to(dev)
            genc, _ = model.encode(model.embed_value(t(gv)), t(gt), t(gi), t(gl))
            genc = genc[-1]
        # the sets
        sizes = [exs[hy.ex].n + len(inf[4]) for hy, inf in zip(hyps, info)]
        P = max(max(sizes), 1)
        d = model.cfg.d_lstm
        paths = torch.zeros(B, P, d, device=dev)
        mask = torch.zeros(B, P, dtype=torch.bool, device=dev)
        roots = torch.empty(B, d, device=dev)
        copy = torch.full((B, P, 1 + model.cfg.max_copy_positions), -1, dtype=torch.long, device=dev)
        child = torch.tensor([inf[3] for inf in info], device=dev)
        once = model.cfg.context_once
        z = torch.zeros(B, P, d, device=dev) if once else None
        if once and gen_rows:       # every hypothesis' generated set contextualized in one call
            gmax = max(len(inf[4]) for inf in info)
            gpaths = torch.zeros(B, gmax, d, device=dev)
            gmask = torch.zeros(B, gmax, dtype=torch.bool, device=dev)
            for k, inf in enumerate(info):
                if inf[4]:
                    gpaths[k, : len(inf[4])] = genc[inf[4][0]: inf[4][-1] + 1]
                    gmask[k, : len(inf[4])] = True
            zgen = model.contextualize(gpaths, gmask)
        for k, (hy, inf) in enumerate(zip(hyps, info)):
            ex = exs[hy.ex]
            top = hy.states[inf[0]][0][-1]
            n = ex.n
            paths[k, :n] = ex.ctx_top if once else top[:n]
            roots[k] = top[n]
            copy[k, :n] = ex.leaf_copy
            if inf[4]:
                g = inf[4]
                paths[k, n: n + len(g)] = genc[g[0]: g[-1] + 1]
                copy[k, n: n + len(g)] = torch.tensor([gen_rows[j][3] for j in g], device=dev)
                if once:
                    z[k, n: n + len(g)] = zgen[k, : len(g)]
            if once:
                z[k, :n] = ex.z_ctx
            mask[k, : sizes[k]] = True
        hid = model.aggregate(paths, mask, roots, child, z)
        is_value = torch.tensor([inf[2] for inf in info], dtype=torch.bool)
        out: list = [None] * B
        node_rows = [k for k in range(B) if not info[k][2]]
        if node_rows:
            lp = model.node_logits(hid[node_rows]).float()
            masks = torch.stack([self.child_mask(info[k][1], info[k][3],
                                                 0 if info[k][0] == -1 else len(hyps[k].kids[info[k][0]]),
                                                 info[k][0] == -1) for k in node_rows])
            lp = lp.masked_fill(~masks, -math.inf)
            for j, k in enumerate(node_rows):
                out[k] = lp[j]
        val_rows = [k for k in range(B) if info[k][2]]
        if val_rows:
            n_sym = max(len(exs[hyps[k].ex].symbols) for k in val_rows)
            files = file_symbols = None
            f_max = max(len(exs[hyps[k].ex].file_symbols) for k in val_rows)
            if f_max:
                files = torch.zeros(len(val_rows), f_max, model.cfg.d_lstm, device=dev)
                file_symbols = torch.full((len(val_rows), f_max), -1, dtype=torch.long, device=dev)
                for j, k in enumerate(val_rows):
                    ex = exs[hyps[k].ex]
                    if ex.files is not None:
                        files[j, : len(ex.file_symbols)] = ex.files
                        file_symbols[j, : len(ex.file_symbols)] = ex.file_symbols
            lp = model.value_logits(hid[val_rows].float(), paths[val_rows].float(), copy[val_rows], n_sym,
                                    files, file_symbols).float()
            for j, k in enumerate(val_rows):
                ex = exs[hyps[k].ex]
                pi = info[k][0]
                m = self.value_mask(ex, hyps[k].types[pi], len(hyps[k].parts[pi]))
                row = torch.full((n_sym,), -math.inf, device=dev)
                ns = len(ex.symbols)
                row[:ns] = lp[j, :ns].masked_fill(~m, -math.inf)
                out[k] = row
        return out, info

    # ------------------------------------------------------------ applying a choice

    def apply(self, hy: _Hyp, info, choice: int, logp: float, ex: _Example, pending: list):
        """A new hypothesis: hy extended by `choice` (type id or symbol id)."""
        pi, ptype, is_value, child, _ = info
        o = hy.fork()
        o.logp = hy.logp + logp
        o.steps += 1
        if is_value:
            s = ex.symbols.string(choice)
            if s == EOS_TOK:
                o.stack.pop()
            else:
                o.parts[pi].append(s)
            return o
        if choice == self.eos_node:
            o.stack.pop()
            if not o.kids[pi]:
                o.leaves.append(pi)
            return o
        t = self.vocab.node_types[choice]
        i = len(o.types)
        o.types.append(t)
        o.parent.append(pi)
        o.kids.append([])
        kind = grammar.kind_of(t)
        o.parts.append([] if kind == "valued" else None)
        if pi == -1:
            o.cidx.append(ex.hole_index)
            o.stack.pop()
        else:
            o.kids[pi].append(i)
            o.cidx.append(min(len(o.kids[pi]) - 1, MAX_CHILD_INDEX))
        if kind != "nonterminal":
            o.leaves.append(i)
        if kind != "fixed":
            o.stack.append(i)
            pending.append((o, pi, i))
        return o

    @torch.no_grad()
    def advance_states(self, pending: list):
        """The states at each newly pushed node: one LSTM step from its parent's, all at once."""
        if not pending:
            return
        hs = torch.cat([o.states[pi][0] for o, pi, _ in pending], 1)
        cs = torch.cat([o.states[pi][1] for o, pi, _ in pending], 1)
        sizes = [o.states[pi][0].shape[1] for o, pi, _ in pending]
        ty = torch.cat([torch.full((s,), self.vocab.type_of(o.types[i]), dtype=torch.long)
                        for s, (o, _, i) in zip(sizes, pending)]).to(self.device)
        ix = torch.cat([torch.full((s,), o.cidx[i], dtype=torch.long)
                        for s, (o, _, i) in zip(sizes, pending)]).to(self.device)
        nh, nc = self.model.lstm_step(self.model.embed_node(ty, ix), hs, cs)
        for (o, _, i), a, c in zip(pending, nh.split(sizes, 1), nc.split(sizes, 1)):
            o.states[i] = (a, c)

    # ------------------------------------------------------------ beam search

    @torch.no_grad()
    def search(self, items: list[tuple[FlatTree, int]], beam: int = 5) -> list[list[Candidate]]:
        exs = [_Example(self.model, self.vocab, t, h, self.device, self.max_paths, self.max_length) for t, h in items]
        alive: list[list[_Hyp]] = [[_Hyp(e, ex.state0)] for e, ex in enumerate(exs)]
        done: list[list[_Hyp]] = [[] for _ in exs]
        while any(alive):
            flat = [hy for group in alive for hy in group]
            scores, info = self.step_scores(flat, exs)
            # top `beam` continuations of every hypothesis
            cands: list[list[tuple[float, int, int]]] = [[] for _ in exs]
            for k, (hy, sc) in enumerate(zip(flat, scores)):
                kk = min(beam, sc.shape[0])
                v, i = sc.topk(kk)
                for lp, c in zip(v.tolist(), i.tolist()):
                    if lp > -math.inf:
                        cands[hy.ex].append((hy.logp + lp, k, c))
            pending: list = []
            new_alive: list[list[_Hyp]] = [[] for _ in exs]
            for e in range(len(exs)):
                if not alive[e]:
                    continue
                for total, k, c in sorted(cands[e], key=lambda x: -x[0]):
                    if len(new_alive[e]) >= beam:
                        break
                    hy = flat[k]
                    o = self.apply(hy, info[k], c, total - hy.logp, exs[e], pending)
                    if not o.stack:
                        done[e].append(o)
                    elif o.steps >= MAX_STEPS or len(o.types) >= MAX_NODES:
                        continue
                    else:
                        new_alive[e].append(o)
                # stop when nothing alive can beat the beam's finished ones (scores only fall)
                fin = sorted(h.logp for h in done[e])[::-1]
                if len(fin) >= beam and new_alive[e] and max(h.logp for h in new_alive[e]) <= fin[beam - 1]:
                    new_alive[e] = []
            pending = [(o, pi, i) for o, pi, i in pending if o.stack and o in new_alive[o.ex]]
            self.advance_states(pending)
            alive = new_alive
        out = []
        for e in range(len(exs)):
            hs = sorted(done[e], key=lambda h: -h.logp)[:beam]
            out.append([self.candidate(h) for h in hs])
        return out

    @torch.no_grad()
    def forced(self, tree: FlatTree, h: int) -> list[float]:
        """Log-probability of each true step, decoding with the truth's choices (a check that
        decoding reads the same S_t and R_t as training)."""
        from anycode.model.paths import target_steps
        ex = _Example(self.model, self.vocab, tree, h, self.device, self.max_paths, self.max_length)
        steps = target_steps(tree, h, ex.f.whole_tokens)
        hy, out = _Hyp(0, ex.state0), []
        for s in steps:
            scores, info = self.step_scores([hy], [ex])
            if s.is_value:
                c = ex.symbols.id(s.label)
                c = 1 if c is None else c
            else:
                c = self.vocab.type_of(s.label)
            out.append(float(scores[0][c]))
            pending: list = []
            hy = self.apply(hy, info[0], c, 0.0, ex, pending)
            self.advance_states(pending)
        assert not hy.stack
        return out

    def candidate(self, h: _Hyp) -> Candidate:
        node = h.node(0)
        code = print_or_none(node)
        parsed = grammar.parse_expression(code) if code is not None else None
        return Candidate(code, h.logp, node, parsed)


def decode(model, vocab, items, beam=5, device="cpu", table=None, max_paths=200, max_length=24,
           chunk: int | None = None, parse_only: bool = True) -> list[list[Candidate]]:
    """Top-`beam` candidates of every example, best first; by default only those that re-parse."""
    dec = Decoder(model, vocab, table, device, max_paths, max_length)
    chunk = chunk or (64 if torch.device(device).type == "cuda" else 16)
    out = []
    for k in range(0, len(items), chunk):
        res = dec.search(items[k: k + chunk], beam)
        out += [[c for c in cs if c.parsed is not None] if parse_only else cs for cs in res]
    return out


# ---------------------------------------------------------------- metrics


def first_rank(cands: list[Candidate], ok) -> int | None:
    for r, c in enumerate(cands):
        if ok(c):
            return r
    return None


@dataclass
class Scored:
    acc: int | None
    tree: int | None
    sub: int | None


def score(cands: list[Candidate], tree: FlatTree, h: int) -> Scored:
    truth = subtree_node(tree, h)
    tcode = print_or_none(truth)
    tparsed = grammar.parse_expression(tcode) if tcode is not None else None
    tnode = tparsed or truth
    acc = first_rank(cands, lambda c: same_code(c.code, tcode))
    tr = first_rank(cands, lambda c: c.parsed is not None and c.parsed.shape() == tnode.shape())
    sub = first_rank(cands, lambda c: c.parsed is not None and (subtoken_diff(c.parsed, tnode) or 0) <= 1
                     and subtoken_diff(c.parsed, tnode) is not None)
    return Scored(acc, tr, sub)


def summarize(scored: list[Scored]) -> dict:
    n = max(len(scored), 1)
    at = lambda attr, k: 100.0 * sum(1 for s in scored if getattr(s, attr) is not None and getattr(s, attr) < k) / n
    return {"acc@1": at("acc", 1), "acc@5": at("acc", 5), "tree@1": at("tree", 1), "tree@5": at("tree", 5),
            "subtoken@1": at("sub", 1), "subtoken@5": at("sub", 5), "n": len(scored)}


# ---------------------------------------------------------------- baselines


def _template(node: grammar.Node, keep: set[str]) -> tuple:
    """A tree with identifiers outside `keep` replaced by slots."""
    if grammar.base_type(node.type) == "identifier" and node.value not in keep:
        return ("<slot>",)
    return (node.type, node.value if not node.children else None, tuple(_template(c, keep) for c in node.children))


def _fill(t: tuple, names: list[str]) -> grammar.Node:
    it = iter(names)

    def go(x):
        if x[0] == "<slot>":
            return grammar.Node("identifier", [], next(it))
        return grammar.Node(x[0], [go(c) for c in x[2]], x[1])

    return go(t)


def _slots(t: tuple) -> int:
    return 1 if t[0] == "<slot>" else sum(_slots(c) for c in t[2])


class Baselines:
    """Built from the train split (up to `limit` examples):

    * position: the most frequent train targets at the same hole position, (parent type, child index);
    * root type (oracle): the most frequent train targets with the truth's root type;
    * copy templates: train targets with their rare identifiers turned into slots, the most frequent
      templates at the hole position, slots filled with the context's identifiers (most frequent in
      the function first, each name used once), scored by template frequency x name frequency.
    """

    def __init__(self, data_dir: Path, limit: int = 300_000, keep_names: int = 150):
        from anycode.model.dataset import Shard, shard_paths
        by_pos: dict[tuple, Counter] = defaultdict(Counter)
        by_root: dict[str, Counter] = defaultdict(Counter)
        names: Counter = Counter()
        items = []
        n = 0
        for path in shard_paths(data_dir, "train"):
            shard = Shard(path)
            a = shard.arrays
            cur_f, tree = -1, None
            for i in range(len(shard)):
                f = int(a["e_func"][i])
                if f != cur_f:
                    cur_f, tree = f, shard.tree(f)
                h = int(a["e_hole"][i])
                node = subtree_node(tree, h)
                code = print_or_none(node)
                if code is None:
                    continue
                pos = (tree.types[tree.parent[h]], tree.child_index[h])
                by_pos[pos][code] += 1
                by_root[node.type][code] += 1
                for x in node.walk():
                    if grammar.base_type(x.type) == "identifier":
                        names[x.value] += 1
                items.append((pos, node))
                n += 1
                if n >= limit:
                    break
            if n >= limit:
                break
        self.keep = {s for s, _ in names.most_common(keep_names)}
        self.templates: dict[tuple, Counter] = defaultdict(Counter)
        for pos, node in items:
            self.templates[pos][_template(node, self.keep)] += 1
        self.by_pos = {k: [c for c, _ in v.most_common(5)] for k, v in by_pos.items()}
        self.by_root = {k: [c for c, _ in v.most_common(5)] for k, v in by_root.items()}
        total: Counter = Counter()
        for v in by_pos.values():
            total.update(v)
        self.global_top = [c for c, _ in total.most_common(5)]
        self.templates = {k: v.most_common(20) for k, v in self.templates.items()}
        self.n_train = n

    def position(self, tree: FlatTree, h: int) -> list[str]:
        return self.by_pos.get((tree.types[tree.parent[h]], tree.child_index[h]), self.global_top)

    def root_type(self, tree: FlatTree, h: int) -> list[str]:
        return self.by_root.get(tree.types[h], self.global_top)

    def copy(self, tree: FlatTree, h: int) -> list[str]:
        ctx_names = Counter(v for i, (t, v) in enumerate(zip(tree.types, tree.values))
                            if grammar.base_type(t) == "identifier" and not tree.in_subtree(i, h) and v is not None)
        top = [s for s, _ in ctx_names.most_common(4)]
        tot = sum(ctx_names.values()) or 1
        pos = (tree.types[tree.parent[h]], tree.child_index[h])
        scored = []
        for t, cnt in self.templates.get(pos, []):
            k = _slots(t)
            fills = [()] if k == 0 else [f for f in product(top, repeat=k) if len(set(f)) == k] if k <= 3 else []
            for f in fills:
                s = math.log(cnt) + sum(math.log(ctx_names[x] / tot) for x in f)
                code = print_or_none(_fill(t, list(f)))
                if code is not None:
                    scored.append((s, code))
        scored.sort(key=lambda x: -x[0])
        out, seen = [], set()
        for _, c in scored:
            if c not in seen:
                seen.add(c)
                out.append(c)
            if len(out) == 5:
                break
        return out


def score_texts(texts: list[str], tree: FlatTree, h: int) -> Scored:
    cands = []
    for t in texts:
        parsed = grammar.parse_expression(t)
        if parsed is not None:
            cands.append(Candidate(t, 0.0, parsed, parsed))
    return score(cands, tree, h)


# ---------------------------------------------------------------- the report


def size_bucket(n: int) -> str:
    for lo, hi in ((2, 3), (4, 5), (6, 8), (9, 12)):
        if n <= hi:
            return f"{lo}-{hi}"
    return "13+"


def context_excerpt(tree: FlatTree, h: int, width: int = 28) -> str:
    """The context leaves around the hole, in source order, with the hole marked."""
    leaves = [i for i in range(len(tree)) if tree.is_leaf(i) and not tree.in_subtree(i, h)]
    before = [i for i in leaves if i < h][-width:]
    after = [i for i in leaves if i >= tree.end[h]][:width // 2]
    show = lambda i: tree.values[i] if tree.values[i] is not None else grammar._FIXED_TEXT.get(
        grammar.base_type(tree.types[i]), grammar.base_type(tree.types[i]))
    return " ".join([show(i) for i in before] + ["⟨?⟩"] + [show(i) for i in after])


def source_excerpt(corpus: Path | None, split: str, shard, f: int, truth: str | None) -> str | None:
    if corpus is None:
        return None
    name, line = shard.source_of(f)
    path = Path(corpus) / split / name
    try:
        lines = path.read_text(encoding="utf8").splitlines()
    except OSError:
        return None
    body = lines[line - 1: line - 1 + 20]
    indent = len(body[0]) - len(body[0].lstrip()) if body else 0
    out = [body[0]] if body else []
    for ln in body[1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        out.append(ln)
    text = "\n".join(x[indent:] for x in out)
    if truth and truth in text:
        text = text.replace(truth, "⟨?⟩", 1)
    return text


def fmt_table(rows: list[tuple[str, dict]], cols=("acc@1", "acc@5", "tree@1", "tree@5", "subtoken@1",
                                                  "subtoken@5")) -> str:
    out = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in rows:
        out.append(f"| {name} | " + " | ".join("" if m.get(c) is None else f"{m[c]:.2f}" for c in cols) + " |")
    return "\n".join(out)


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", type=Path, default=Path("model/shipped"))
    ap.add_argument("--data", type=Path, default=Path("data/dataset/python"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N examples of a fixed shuffle of the split")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None, help="write the results into this markdown file")
    ap.add_argument("--json", type=Path, default=None, help="write the metrics as JSON")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus/python"),
                    help="source files for the prediction excerpts, when present")
    ap.add_argument("--baseline-train", type=int, default=300_000, help="train examples the baselines read")
    ap.add_argument("--examples", type=int, default=20, help="predictions shown in the report")


BEGIN, END = "<!-- eval:begin -->", "<!-- eval:end -->"


def sample_refs(data_dir: Path, split: str, limit: int | None = None) -> list:
    """(shard, example index) for the split's examples in a fixed shuffle (seed 0), so that the
    first `limit` are a uniform sample, the same one for every tool that asks."""
    from anycode.model.dataset import Shard, shard_paths
    shards = [Shard(p) for p in shard_paths(data_dir, split)]
    refs = [(shard, i) for shard in shards for i in range(len(shard))]
    order = np.random.default_rng(0).permutation(len(refs))
    return [refs[j] for j in (order[:limit] if limit else order)]


def run(args) -> int:
    from anycode.model.dataset import shard_paths
    from anycode.model.checkpoint import load_model, pick_device

    t0 = time.time()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(False)   # a plan per shape: slow with varying set sizes
    model, vocab, conf = load_model(args.model, device)
    feat = conf.get("features", {})
    max_paths, max_length = feat.get("max_paths", 200), feat.get("max_length", 24)
    table = None
    if GrammarTable is not None and (args.data / "grammar.json").exists():
        table = GrammarTable.load(args.data / "grammar.json")
    refs = sample_refs(args.data, args.split, args.limit)
    items = [shard.example(i) for shard, i in refs]
    print(f"{len(items)} {args.split} examples; model {args.model} on {device}; grammar table: "
          f"{'yes' if table is not None else 'no'}", file=sys.stderr)

    t1 = time.time()
    raw = decode(model, vocab, items, args.beam, device, table, max_paths, max_length, parse_only=False)
    t_dec = time.time() - t1
    parses_top1 = 100.0 * sum(1 for cs in raw if cs and cs[0].parsed is not None) / max(len(raw), 1)
    preds = [[c for c in cs if c.parsed is not None] for cs in raw]
    slm = [score(p, t, h) for p, (t, h) in zip(preds, items)]
    metrics = {"SLM (this model, beam %d)" % args.beam: summarize(slm)}

    bl = Baselines(args.data, args.baseline_train) if shard_paths(args.data, "train") else None
    if bl is not None:
        metrics["most frequent target at the hole position (train)"] = summarize(
            [score_texts(bl.position(t, h), t, h) for t, h in items])
        metrics["most frequent target of the true root type (train; oracle type)"] = summarize(
            [score_texts(bl.root_type(t, h), t, h) for t, h in items])
        metrics["copy heuristic: train templates filled with context names"] = summarize(
            [score_texts(bl.copy(t, h), t, h) for t, h in items])

    sizes = [subtree_node(t, h).size() for t, h in items]
    by_size = defaultdict(list)
    for s, sc in zip(sizes, slm):
        by_size[size_bucket(s)].append(sc)
    size_rows = [(f"{b} nodes (n={len(by_size[b])})", summarize(by_size[b]))
                 for b in ("2-3", "4-5", "6-8", "9-12", "13+") if by_size[b]]

    result = {"split": args.split, "examples": len(items), "beam": args.beam, "model": str(args.model),
              "device": str(device), "decode_seconds": t_dec, "examples_per_second": len(items) / max(t_dec, 1e-9),
              "top1_parses": parses_top1, "metrics": metrics, "by_size": dict(size_rows),
              "grammar_table": table is not None, "baseline_train_examples": bl.n_train if bl else 0}
    for name, m in metrics.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "n"), file=sys.stderr)
    print(f"top-1 parses: {parses_top1:.2f}%; decoding {t_dec:.0f}s ({result['examples_per_second']:.1f} ex/s)",
          file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))

    if args.out:
        cmd = "anycode eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else \
            f"anycode eval --model {args.model} --data {args.data} --split {args.split}" + \
            (f" --limit {args.limit}" if args.limit else "") + f" --beam {args.beam}"
        lines = [BEGIN, "", f"Results of `{cmd}` ({len(items)} {args.split} examples, "
                 f"beam {args.beam}, grammar table {'on' if table is not None else 'off'}, {device}, "
                 f"{t_dec:.0f} s of decoding). Percent of examples.", ""]
        rows = list(metrics.items()) + [("SLM, Java (paper, Table 1 and 4; another language and data set)",
                                         PAPER_JAVA)]
        lines += [fmt_table(rows), "",
                  f"Top-1 candidates that print and re-parse as one expression, before dropping those that "
                  f"do not: {parses_top1:.2f}%.", "", "By target size (nodes of the model's tree):", "",
                  fmt_table(size_rows), "", f"### {args.examples} predictions", "",
                  f"The first {args.examples} examples of the sample, as they come (not picked).", ""]
        for (shard, i), (t, h), cs, sc in list(zip(refs, items, preds, slm))[: args.examples]:
            truth = truth_code(t, h)
            f = int(shard.arrays["e_func"][i])
            src = source_excerpt(args.corpus if args.corpus and args.corpus.exists() else None, args.split,
                                 shard, f, truth)
            mark = "exact" if sc.acc == 0 else "in top-5" if sc.acc is not None else \
                "tree match" if sc.tree is not None else "miss"
            lines.append(f"**{shard.source_of(f)[0]}:{shard.source_of(f)[1]}** — truth "
                         f"{'`' + truth + '`' if truth is not None else '(does not print)'} ({mark})")
            lines.append("")
            lines.append("```python")
            lines.append(src if src else context_excerpt(t, h))
            lines.append("```")
            lines.append("")
            for r, c in enumerate(cs[:5]):
                tag = " ✓" if same_code(c.code, truth) else ""
                lines.append(f"{r + 1}. `{c.code}` — {math.exp(c.logp) * 100:.1f}%{tag}")
            if not cs:
                lines.append("(no candidate re-parsed)")
            lines.append("")
        lines.append(END)
        block = "\n".join(lines)
        old = args.out.read_text() if args.out.exists() else "# The model\n\n" + BEGIN + END + "\n"
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
        else:
            new = old.rstrip() + "\n\n" + block + "\n"
        args.out.write_text(new)
        print(f"wrote {args.out}", file=sys.stderr)
    print(f"eval done in {time.time() - t0:.0f}s", file=sys.stderr)
    return 0
