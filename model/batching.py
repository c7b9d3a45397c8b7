"""Training batches: every generation step of many examples, S_t and R_t exactly, with prefix caching.

For an example (tree, h) with hole parent p, every step t reads

  * the paths from the context leaves to pi_t.  A context leaf's path to any
    node of the hole passes through p, so its state at p is computed once
    (`SLM.encode` over value + prefix), and its state at a hole node n is
    state(l, parent(n)) advanced by one `SLM.lstm_step` with the embedding of n.
    Only the hole nodes that some step expands (its pi nodes) need states; they
    are stepped level by level (depth below p), across the whole batch at once;
  * the paths from the leaves generated inside the hole before t to pi_t
    (`paths.generated_leaves`): short, encoded whole with `SLM.encode`;
  * the root path R_t: cached the same way as a context leaf (root -> p once,
    then one step per hole node), without a value;
  * the child index of the node to predict, and the label: a node type id for
    node steps, a symbol id of the example's `features.Symbols` for value steps
    (UNK = 1 when the label has no symbol);
  * for models with file tokens, each example's file tokens (features.py), encoded
    once per batch (their value alone) and read by every value step of the example.

The numpy side (`featurize`, `collate`) runs in DataLoader workers; the torch
side (`step_inputs`, `batch_loss`) runs the network on the device.  The state
table is one tensor of rows (context leaf, node) and (root, node); row layout:

  [0, R)              context leaves of every example, at p (from `encode`)
  [R, R + E)          the root path of every example, at p
  then level by level, for every (example, pi node at that depth): N_e leaf
  rows followed by one root row.

`tests/test_batching.py` checks the whole thing against `paths.step_paths`
encoded from scratch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from anycode.model.features import (MAX_COPY_POSITIONS, MAX_VALUE_SUBTOKENS, context_features,
                                    copy_row, generated_leaf_value, value_ids)
from anycode.model.paths import FlatTree, generated_leaves, target_steps
from anycode.model.vocab import Vocab

COPY_COLUMNS = 1 + MAX_COPY_POSITIONS


# ---------------------------------------------------------------- one example (numpy)


@dataclass
class ExampleArrays:
    n_leaves: int
    leaf_values: np.ndarray        # [N, MAX_VALUE_SUBTOKENS]
    prefix_types: np.ndarray       # [N, Lp]
    prefix_index: np.ndarray       # [N, Lp]
    prefix_len: np.ndarray         # [N]
    leaf_copy: np.ndarray          # [N, COPY_COLUMNS] symbol ids, -1 = none
    root_types: np.ndarray         # [Lr] root ... p
    root_index: np.ndarray         # [Lr]
    pi_nodes: list[int]            # tree indices of the hole nodes some step expands, preorder
    pi_parent: list[int]           # position of each one's parent in pi_nodes, -1 = p
    pi_depth: list[int]            # depth below p (h is 1)
    pi_type: list[int]             # type id
    pi_index: list[int]            # child index
    gen_values: np.ndarray         # [G, MAX_VALUE_SUBTOKENS] generated-leaf paths, deduplicated
    gen_types: np.ndarray          # [G, Lg] leaf -> pi
    gen_index: np.ndarray          # [G, Lg]
    gen_len: np.ndarray            # [G]
    gen_copy: np.ndarray           # [G, COPY_COLUMNS]
    step_pi: np.ndarray            # [T] position in pi_nodes, -1 = p
    step_child: np.ndarray         # [T] child index of the node to predict
    step_is_value: np.ndarray      # [T] bool
    step_label: np.ndarray         # [T] type id or symbol id
    step_gen: list[list[int]]      # [T] rows of gen_* in this step's set, in generated_leaves order
    n_symbols: int
    file_values: np.ndarray        # [F, MAX_VALUE_SUBTOKENS] file tokens (file_tokens models; else F = 0)
    file_symbols: np.ndarray       # [F]


def featurize(tree: FlatTree, h: int, vocab: Vocab, max_paths: int = 200, max_length: int = 24,
              file_tokens: int = 0) -> ExampleArrays:
    f = context_features(tree, h, vocab, max_paths, max_length, file_tokens)
    steps = target_steps(tree, h, f.whole_tokens)
    p = tree.parent[h]
    symbols = f.symbols

    pi_nodes = sorted({s.parent for s in steps if s.parent != p})
    pos = {n: k for k, n in enumerate(pi_nodes)}
    base_depth = tree.depth[p]
    pi_parent = [pos.get(tree.parent[n], -1) for n in pi_nodes]
    pi_depth = [tree.depth[n] - base_depth for n in pi_nodes]
    pi_type = [vocab.type_of(tree.types[n]) for n in pi_nodes]
    pi_index = [tree.child_index[n] for n in pi_nodes]

    gen_rows: dict[tuple[int, int, int], int] = {}
    g_values, g_paths, g_copy = [], [], []
    step_gen = []
    T = len(steps)
    step_pi = np.empty(T, np.int64)
    step_child = np.empty(T, np.int64)
    step_is_value = np.empty(T, bool)
    step_label = np.empty(T, np.int64)
    for t, s in enumerate(steps):
        step_pi[t] = pos.get(s.parent, -1)
        step_child[t] = s.child_index
        step_is_value[t] = s.is_value
        if s.is_value:
            sid = symbols.id(s.label)
            step_label[t] = 1 if sid is None else sid
        else:
            step_label[t] = vocab.type_of(s.label)
        rows = []
        for leaf, parts in generated_leaves(tree, h, steps, t).items():
            key = (leaf, len(parts), s.parent)
            r = gen_rows.get(key)
            if r is None:
                r = gen_rows[key] = len(g_values)
                token, subs = generated_leaf_value(tree.lang, tree.types[leaf], parts)
                g_values.append(value_ids(vocab, subs))
                g_paths.append(tree.path(leaf, s.parent))
                g_copy.append(copy_row(symbols, token, subs))
            rows.append(r)
        step_gen.append(rows)

    G = len(g_values)
    Lg = max((len(q) for q in g_paths), default=1)
    gen_values = np.zeros((G, MAX_VALUE_SUBTOKENS), np.int64)
    gen_types = np.zeros((G, Lg), np.int64)
    gen_index = np.zeros((G, Lg), np.int64)
    gen_len = np.zeros(G, np.int64)
    for g, (ids, q) in enumerate(zip(g_values, g_paths)):
        gen_values[g, : len(ids)] = ids
        gen_types[g, : len(q)] = [vocab.type_of(tree.types[n]) for n in q]
        gen_index[g, : len(q)] = [tree.child_index[n] for n in q]
        gen_len[g] = len(q)
    gen_copy = np.array(g_copy, np.int64).reshape(G, COPY_COLUMNS)

    lp = int(f.prefix_len.max()) if len(f.prefix_len) else 1
    return ExampleArrays(
        len(f.paths.leaves), f.leaf_values, f.prefix_types[:, :lp], f.prefix_index[:, :lp], f.prefix_len,
        f.leaf_copy, f.root_types, f.root_index, pi_nodes, pi_parent, pi_depth, pi_type, pi_index,
        gen_values, gen_types, gen_index, gen_len, gen_copy, step_pi, step_child, step_is_value, step_label,
        step_gen, len(symbols), f.file_values, f.file_symbols)


# ---------------------------------------------------------------- a batch (numpy)


@dataclass
class Batch:
    ctx_values: np.ndarray         # [R, MAX_VALUE_SUBTOKENS]
    ctx_types: np.ndarray          # [R, Lp]
    ctx_index: np.ndarray          # [R, Lp]
    ctx_len: np.ndarray            # [R]
    root_types: np.ndarray         # [E, Lr]
    root_index: np.ndarray         # [E, Lr]
    root_len: np.ndarray           # [E]
    level_src: list[np.ndarray]    # per level: [K] state-table rows of the parent states
    level_types: list[np.ndarray]  # per level: [K] type id of the node stepped into
    level_index: list[np.ndarray]  # per level: [K] its child index
    gen_values: np.ndarray         # [G, MAX_VALUE_SUBTOKENS]
    gen_types: np.ndarray          # [G, Lg]
    gen_index: np.ndarray          # [G, Lg]
    gen_len: np.ndarray            # [G]
    set_rows: np.ndarray           # [S, P] rows of memory = [state table top layer; gen encodings]
    set_mask: np.ndarray           # [S, P] bool
    root_rows: np.ndarray          # [S] state-table row of R_t
    child_index: np.ndarray        # [S]
    is_value: np.ndarray           # [S] bool
    labels: np.ndarray             # [S]
    copy_symbols: np.ndarray       # [Sv, P, COPY_COLUMNS] for the value steps, in order
    file_values: np.ndarray        # [F, MAX_VALUE_SUBTOKENS] every example's file tokens
    file_rows: np.ndarray          # [Sv, Fmax] 1 + row of file_values of each value step's file tokens, 0 = none
    file_symbols: np.ndarray       # [Sv, Fmax] the symbol each votes for, -1 = none
    n_symbols: int
    n_examples: int
    step_example: np.ndarray       # [S] which example of the batch each step belongs to
    # context_once batches (empty otherwise): the context set of each example, the generated set of
    # each step; copy_symbols are then laid out [context (Nmax); generated (Gmax)]
    ctx_rows: np.ndarray           # [E, Nmax] state-table rows of the context leaves at p
    ctx_mask: np.ndarray           # [E, Nmax]
    gen_set_rows: np.ndarray       # [S, Gmax] 1 + row of gen_*, 0 = none
    gen_set_mask: np.ndarray       # [S, Gmax]

    @property
    def n_targets(self) -> int:
        return len(self.labels)

    def to(self, device) -> "TorchBatch":
        out = {}
        for fl in fields(self):
            v = getattr(self, fl.name)
            if isinstance(v, np.ndarray):
                out[fl.name] = torch.from_numpy(v).to(device, non_blocking=True)
            elif isinstance(v, list):
                out[fl.name] = [torch.from_numpy(a).to(device, non_blocking=True) for a in v]
            else:
                out[fl.name] = v
        return TorchBatch(**out)


@dataclass
class TorchBatch:
    """The same fields as `Batch`, as tensors on the device."""
    ctx_values: torch.Tensor
    ctx_types: torch.Tensor
    ctx_index: torch.Tensor
    ctx_len: torch.Tensor
    root_types: torch.Tensor
    root_index: torch.Tensor
    root_len: torch.Tensor
    level_src: list
    level_types: list
    level_index: list
    gen_values: torch.Tensor
    gen_types: torch.Tensor
    gen_index: torch.Tensor
    gen_len: torch.Tensor
    set_rows: torch.Tensor
    set_mask: torch.Tensor
    root_rows: torch.Tensor
    child_index: torch.Tensor
    is_value: torch.Tensor
    labels: torch.Tensor
    copy_symbols: torch.Tensor
    file_values: torch.Tensor
    file_rows: torch.Tensor
    file_symbols: torch.Tensor
    n_symbols: int
    n_examples: int
    step_example: torch.Tensor
    ctx_rows: torch.Tensor
    ctx_mask: torch.Tensor
    gen_set_rows: torch.Tensor
    gen_set_mask: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int(self.labels.shape[0])


def _pad2(arrays: list[np.ndarray], width: int | None = None) -> np.ndarray:
    width = max([a.shape[1] for a in arrays] + [1]) if width is None else width
    out = np.zeros((sum(a.shape[0] for a in arrays), width), np.int64)
    r = 0
    for a in arrays:
        out[r: r + a.shape[0], : a.shape[1]] = a
        r += a.shape[0]
    return out


def collate(examples: list[ExampleArrays], context_once: bool = False) -> Batch:
    """A batch of examples.  With `context_once`, the hole nodes get only the root path's row
    (context leaves stay at p) and the sets are laid out per example and per step (see Batch)."""
    E = len(examples)
    N = np.array([x.n_leaves for x in examples], np.int64)
    ctx_off = np.concatenate([[0], np.cumsum(N)])
    R = int(ctx_off[-1])

    # state-table rows of every (example, pi node): node position k -> first row (N_e leaf rows + 1 root row)
    depth_max = max((max(x.pi_depth, default=0) for x in examples), default=0)
    cursor = R + E
    base: list[list[int]] = [[0] * len(x.pi_nodes) for x in examples]
    level_src, level_types, level_index = [], [], []
    for d in range(1, depth_max + 1):
        src, ty, ix = [], [], []
        for e, x in enumerate(examples):
            n = int(N[e])
            leaf_rows = np.arange(n, dtype=np.int64)
            for k, dk in enumerate(x.pi_depth):
                if dk != d:
                    continue
                rows = 1 if context_once else n + 1
                base[e][k] = cursor
                cursor += rows
                par = x.pi_parent[k]
                if par < 0:
                    src.append(np.array([R + e]) if context_once else np.concatenate([ctx_off[e] + leaf_rows, [R + e]]))
                else:
                    src.append(base[e][par] + np.arange(rows, dtype=np.int64))
                ty.append(np.full(rows, x.pi_type[k], np.int64))
                ix.append(np.full(rows, x.pi_index[k], np.int64))
        level_src.append(np.concatenate(src) if src else np.zeros(0, np.int64))
        level_types.append(np.concatenate(ty) if ty else np.zeros(0, np.int64))
        level_index.append(np.concatenate(ix) if ix else np.zeros(0, np.int64))
    n_state_rows = cursor

    G_off = np.concatenate([[0], np.cumsum([len(x.gen_len) for x in examples])])
    S = sum(len(x.step_label) for x in examples)
    if context_once:
        return _collate_context_once(examples, N, ctx_off, R, base, G_off, S, level_src, level_types, level_index)
    P = max(int(N[e]) + max((len(r) for r in x.step_gen), default=0) for e, x in enumerate(examples))
    P = -(-max(P, 1) // 8) * 8        # fewer distinct shapes: kernels and allocations get reused
    set_rows = np.zeros((S, P), np.int64)
    set_mask = np.zeros((S, P), bool)
    root_rows = np.empty(S, np.int64)
    step_example = np.empty(S, np.int64)
    copy_parts = []
    s = 0
    for e, x in enumerate(examples):
        n = int(N[e])
        ctx_copy = x.leaf_copy
        for t in range(len(x.step_label)):
            k = int(x.step_pi[t])
            first = ctx_off[e] if k < 0 else base[e][k]
            set_rows[s, :n] = first + np.arange(n)
            root_rows[s] = R + e if k < 0 else base[e][k] + n
            gen = x.step_gen[t]
            if gen:
                set_rows[s, n: n + len(gen)] = n_state_rows + G_off[e] + np.asarray(gen)
            set_mask[s, : n + len(gen)] = True
            step_example[s] = e
            if x.step_is_value[t]:
                c = np.full((P, COPY_COLUMNS), -1, np.int64)
                c[:n] = ctx_copy
                if gen:
                    c[n: n + len(gen)] = x.gen_copy[gen]
                copy_parts.append(c)
            s += 1
    copy_symbols = np.stack(copy_parts) if copy_parts else np.full((0, P, COPY_COLUMNS), -1, np.int64)

    none = np.zeros((0, 0), np.int64)
    return _batch(examples, level_src, level_types, level_index, set_rows=set_rows, set_mask=set_mask,
                  root_rows=root_rows, copy_symbols=copy_symbols, step_example=step_example,
                  ctx_rows=none, ctx_mask=none.astype(bool), gen_set_rows=none, gen_set_mask=none.astype(bool))


def _collate_context_once(examples, N, ctx_off, R, base, G_off, S, level_src, level_types, level_index) -> Batch:
    E = len(examples)
    n_max = -(-max(int(N.max()), 1) // 8) * 8
    g_max = max((len(r) for x in examples for r in x.step_gen), default=0)
    ctx_rows = np.zeros((E, n_max), np.int64)
    ctx_mask = np.zeros((E, n_max), bool)
    gen_set_rows = np.zeros((S, g_max), np.int64)
    gen_set_mask = np.zeros((S, g_max), bool)
    root_rows = np.empty(S, np.int64)
    step_example = np.empty(S, np.int64)
    copy_parts = []
    s = 0
    for e, x in enumerate(examples):
        n = int(N[e])
        ctx_rows[e, :n] = ctx_off[e] + np.arange(n)
        ctx_mask[e, :n] = True
        for t in range(len(x.step_label)):
            k = int(x.step_pi[t])
            root_rows[s] = R + e if k < 0 else base[e][k]
            gen = x.step_gen[t]
            if gen:
                gen_set_rows[s, : len(gen)] = 1 + G_off[e] + np.asarray(gen)
                gen_set_mask[s, : len(gen)] = True
            step_example[s] = e
            if x.step_is_value[t]:
                c = np.full((n_max + g_max, COPY_COLUMNS), -1, np.int64)
                c[:n] = x.leaf_copy
                if gen:
                    c[n_max: n_max + len(gen)] = x.gen_copy[gen]
                copy_parts.append(c)
            s += 1
    copy_symbols = np.stack(copy_parts) if copy_parts else np.full((0, n_max + g_max, COPY_COLUMNS), -1, np.int64)
    none = np.zeros((0, 0), np.int64)
    return _batch(examples, level_src, level_types, level_index, set_rows=none, set_mask=none.astype(bool),
                  root_rows=root_rows, copy_symbols=copy_symbols, step_example=step_example, ctx_rows=ctx_rows,
                  ctx_mask=ctx_mask, gen_set_rows=gen_set_rows, gen_set_mask=gen_set_mask)


def _batch(examples: list[ExampleArrays], level_src, level_types, level_index, **sets) -> Batch:
    E = len(examples)
    lr = max(len(x.root_types) for x in examples)
    root_types = np.zeros((E, lr), np.int64)
    root_index = np.zeros((E, lr), np.int64)
    for e, x in enumerate(examples):
        root_types[e, : len(x.root_types)] = x.root_types
        root_index[e, : len(x.root_index)] = x.root_index
    # file tokens: each value step reads its example's rows
    n_file = [len(x.file_symbols) for x in examples]
    f_off = np.concatenate([[0], np.cumsum(n_file)]).astype(np.int64)
    f_max = max(n_file)
    file_rows, file_symbols = [], []
    for e, x in enumerate(examples):
        rows = np.zeros(f_max, np.int64)
        rows[: n_file[e]] = 1 + f_off[e] + np.arange(n_file[e])
        syms = np.full(f_max, -1, np.int64)
        syms[: n_file[e]] = x.file_symbols
        nv = int(x.step_is_value.sum())
        file_rows.append(np.tile(rows, (nv, 1)))
        file_symbols.append(np.tile(syms, (nv, 1)))
    return Batch(
        ctx_values=_pad2([x.leaf_values for x in examples], MAX_VALUE_SUBTOKENS),
        ctx_types=_pad2([x.prefix_types for x in examples]),
        ctx_index=_pad2([x.prefix_index for x in examples]),
        ctx_len=np.concatenate([x.prefix_len for x in examples]).astype(np.int64),
        root_types=root_types, root_index=root_index,
        root_len=np.array([len(x.root_types) for x in examples], np.int64),
        level_src=level_src, level_types=level_types, level_index=level_index,
        gen_values=_pad2([x.gen_values for x in examples], MAX_VALUE_SUBTOKENS),
        gen_types=_pad2([x.gen_types for x in examples]),
        gen_index=_pad2([x.gen_index for x in examples]),
        gen_len=np.concatenate([x.gen_len for x in examples]).astype(np.int64),
        child_index=np.concatenate([x.step_child for x in examples]),
        is_value=np.concatenate([x.step_is_value for x in examples]),
        labels=np.concatenate([x.step_label for x in examples]),
        file_values=_pad2([x.file_values for x in examples], MAX_VALUE_SUBTOKENS),
        file_rows=np.concatenate(file_rows), file_symbols=np.concatenate(file_symbols),
        n_symbols=max(x.n_symbols for x in examples),
        n_examples=E, **sets,
    )


def make_batch(items: list[tuple[FlatTree, int]], vocab: Vocab, max_paths: int = 200, max_length: int = 24,
               context_once: bool = False, file_tokens: int = 0) -> Batch:
    return collate([featurize(t, h, vocab, max_paths, max_length, file_tokens) for t, h in items], context_once)


# ---------------------------------------------------------------- the network side (torch)


@dataclass
class StepInputs:
    paths: torch.Tensor            # [S, P, d_lstm] top-layer LSTM state of every path in S_t
    mask: torch.Tensor             # [S, P]
    root: torch.Tensor             # [S, d_lstm] R_t
    child_index: torch.Tensor      # [S]
    z: torch.Tensor | None = None  # [S, P, d_lstm] the paths contextualized (context_once), else None
    ctx: torch.Tensor | None = None  # context_once: [E, Nmax, d_lstm] each example's context set
    gen: torch.Tensor | None = None  # context_once: [S, Gmax, d_lstm] each step's generated set


def step_inputs(model, b: TorchBatch) -> StepInputs:
    """S_t and R_t of every step of the batch, with cached prefixes.

    The path LSTM runs outside autocast, in fp32 (TF32 matmuls on CUDA): its many small
    sequential steps are bound by kernel launches, and autocast would add a weight cast to each."""
    with torch.autocast(b.set_rows.device.type, enabled=False):
        x = _step_inputs(model, b)
    if model.cfg.context_once:
        z_ctx = model.contextualize(x.ctx, b.ctx_mask)          # once per example
        z_gen = model.contextualize(x.gen, b.gen_set_mask)
        x.z = torch.cat([z_ctx[b.step_example], z_gen], 1)
    return x


def _step_inputs(model, b: TorchBatch) -> StepInputs:
    # context leaves and root paths, up to p
    h_ctx, c_ctx = model.encode(model.embed_value(b.ctx_values), b.ctx_types, b.ctx_index, b.ctx_len)
    h_root, c_root = model.encode(None, b.root_types, b.root_index, b.root_len)
    H = torch.cat([h_ctx, h_root], 1)
    C = torch.cat([c_ctx, c_root], 1)
    # down the hole, level by level
    for src, ty, ix in zip(b.level_src, b.level_types, b.level_index):
        if src.numel() == 0:
            continue
        nh, nc = model.lstm_step(model.embed_node(ty, ix), H.index_select(1, src), C.index_select(1, src))
        H = torch.cat([H, nh], 1)
        C = torch.cat([C, nc], 1)
    top = H[-1]
    # generated-leaf paths, whole
    g = None
    if b.gen_len.numel():
        g, _ = model.encode(model.embed_value(b.gen_values), b.gen_types, b.gen_index, b.gen_len)
        g = g[-1]
    root = F.embedding(b.root_rows, top)
    if model.cfg.context_once:
        gen_memory = torch.cat([top.new_zeros(1, top.shape[1])] + ([g] if g is not None else []), 0)   # row 0: none
        ctx = F.embedding(b.ctx_rows, top)                              # [E, Nmax, d]
        gen = F.embedding(b.gen_set_rows, gen_memory)                   # [S, Gmax, d]
        e = b.step_example
        return StepInputs(torch.cat([ctx[e], gen], 1), torch.cat([b.ctx_mask[e], b.gen_set_mask], 1), root,
                          b.child_index, ctx=ctx, gen=gen)
    memory = top if g is None else torch.cat([top, g], 0)
    # embedding lookups rather than indexing: their backward handles the many repeated rows well on CUDA
    return StepInputs(F.embedding(b.set_rows, memory), b.set_mask, root, b.child_index)


def file_encodings(model, b: TorchBatch) -> torch.Tensor | None:
    """[Sv, Fmax, d_lstm] each value step's file tokens, encoded (their value alone), or None."""
    if not b.file_values.shape[0]:
        return None
    enc = model.encode_file_tokens(b.file_values)
    memory = torch.cat([enc.new_zeros(1, enc.shape[-1]), enc], 0)        # row 0: none
    return F.embedding(b.file_rows, memory)


def step_log_probs(model, b: TorchBatch, x: StepInputs | None = None) -> torch.Tensor:
    """Log-probability of every step's label [S]."""
    x = x if x is not None else step_inputs(model, b)
    h = model.aggregate(x.paths, x.mask, x.root, x.child_index, x.z)
    out = torch.empty(b.n_targets, device=h.device, dtype=torch.float32)
    node = ~b.is_value
    if node.any():
        lp = model.node_logits(h[node]).float()
        out[node] = lp.gather(1, b.labels[node].unsqueeze(1)).squeeze(1)
    if b.is_value.any():
        with torch.autocast(h.device.type, enabled=False):
            files = file_encodings(model, b)
            lp = model.value_logits(h[b.is_value].float(), x.paths[b.is_value].float(), b.copy_symbols, b.n_symbols,
                                    files, b.file_symbols)
        out[b.is_value] = lp.gather(1, b.labels[b.is_value].unsqueeze(1)).squeeze(1)
    return out


def batch_loss(model, b: TorchBatch) -> tuple[torch.Tensor, dict]:
    """Mean cross entropy over the batch's targets, and per-kind sums for logging."""
    lp = step_log_probs(model, b)
    loss = -lp.mean()
    with torch.no_grad():
        stats = {"targets": b.n_targets, "nll_sum": float(-lp.sum()),
                 "value_targets": int(b.is_value.sum()), "value_nll_sum": float(-lp[b.is_value].sum())}
    return loss, stats


# ---------------------------------------------------------------- step counts for bucketing


def approx_step_counts(shard) -> np.ndarray:
    """Number of generation steps of every example of a shard, counting each value as its
    subtokens (an upper bound: values copied whole take one step)."""
    a = shard.arrays
    strings = shard.strings
    lang = shard.lang
    n_type, n_value = a["n_type"], a["n_value"]
    nt = np.zeros(len(strings), np.int64)       # by type string: nonterminal, valued, identifier
    vals = np.zeros(len(strings), np.int64)
    ident = np.zeros(len(strings), bool)
    for i in np.unique(n_type):
        k = lang.kind_of(strings[i])
        nt[i] = k == "nonterminal"
        vals[i] = k == "valued"
        ident[i] = lang.base_type(strings[i]) == lang.IDENTIFIER
    nsub = np.ones(len(strings) + 1, np.int64)  # by value string, as an identifier; index -1: no value
    for v in np.unique(n_value[ident[n_type] & (n_value >= 0)]):
        nsub[v] = len(lang.subtokens(lang.IDENTIFIER, strings[v]))
    cnt = np.where(ident[n_type], nsub[n_value], 1)
    cost = 1 + nt[n_type] + vals[n_type] * (1 + cnt)
    cs = np.concatenate([[0], np.cumsum(cost)])
    start = a["f_start"][a["e_func"]]
    h = start + a["e_hole"]
    end = start + a["n_end"][h]
    return (cs[end] - cs[h]).astype(np.int64)


def approx_path_counts(shard, max_paths: int = 200) -> np.ndarray:
    """Number of context paths of every example of a shard: the function's leaves outside the
    hole, capped at `max_paths` (an upper bound: leaves whose path is too long are dropped later)."""
    a = shard.arrays
    local = np.arange(len(a["n_end"]), dtype=np.int64)
    start_of_node = np.repeat(a["f_start"][:-1], np.diff(a["f_start"]))
    is_leaf = a["n_end"].astype(np.int64) == local - start_of_node + 1
    cs = np.concatenate([[0], np.cumsum(is_leaf)])
    f = a["e_func"]
    start, stop = a["f_start"][f], a["f_start"][f + 1]
    h = start + a["e_hole"]
    end = start + a["n_end"][h]
    inside = cs[end] - cs[h]
    return np.minimum(cs[stop] - cs[start] - inside, max_paths).astype(np.int64)
