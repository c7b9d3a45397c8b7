"""The training loss of a `packed.FastBatch`: every step of every example at once, context_once wiring.

The same arithmetic as `batching.batch_loss` on a context_once batch (tests/test_fast_steps.py checks
the two agree), organised for a GPU:

  * the path LSTM runs as a handful of fused calls over packed sequences (cuDNN on CUDA), with the
    lengths taken from the host copy of the batch (no device-to-host sync): the context leaves' paths
    to p, the root paths to p, then the chains from p down to every expanded hole node *from the
    root path's state at p* (one call with initial states, instead of a Python loop over the depth),
    the generated-leaf paths, and the batch's distinct file tokens;
  * the transformer runs once over each example's context set [E, N] and once over the generated
    sets of the steps that have any [S', Gmax];
  * the attention of R_t over its context set, the copy of context leaves and of file tokens are
    batched matrix products per example ([E, T, N]), not a copy of each example's set for every
    one of its steps;
  * the value head scores only what the loss needs: the label's summed probability against the
    total (log-sum-exp over the vocabulary and every copy source), no [steps, symbols] table.
No `.item()`, no boolean-mask indexing: the step runs without waiting for the GPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode.model.slm import NEG
from anycode.model.vocab import MAX_CHILD_INDEX

LOG_FLOOR = math.log(1e-30)      # the least log-probability a value step's label gets


def lstm(model, first, types, index, lengths_host, state=None):
    """Top-layer state after each padded path's last node: `SLM.encode` as one fused call, from the
    zero state or from `state` (h, c [layers, n, d]); `lengths_host`: the node counts, on the host."""
    x = model.embed_node(types, index)
    lengths = lengths_host
    if first is not None:
        x = torch.cat([first.unsqueeze(1), x], 1)
        lengths = lengths + 1
    n = x.shape[0]
    if state is None:
        state = model.initial_state(n, x.device)
    if n == 0:
        return state[0][-1]
    packed = nn.utils.rnn.pack_padded_sequence(model.lstm_drop(x), lengths.clamp(min=1), batch_first=True,
                                               enforce_sorted=False)
    h0 = state[0].index_select(1, packed.sorted_indices)
    c0 = state[1].index_select(1, packed.sorted_indices)
    weights = [w for cell in model.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    _, h, _ = torch._VF.lstm(packed.data, packed.batch_sizes, (h0, c0), weights, True, len(model.cells),
                             model.lstm_drop.p, model.training, False)
    return h[-1].index_select(0, packed.unsorted_indices)


def lstm_states(model, first, types, index, lengths_host):
    """(h, c) of every layer after each path (for continuing from them), from the zero state."""
    x = model.embed_node(types, index)
    if first is not None:
        x = torch.cat([first.unsqueeze(1), x], 1)
        lengths_host = lengths_host + 1
    packed = nn.utils.rnn.pack_padded_sequence(model.lstm_drop(x), lengths_host.clamp(min=1), batch_first=True,
                                               enforce_sorted=False)
    h0, c0 = model.initial_state(x.shape[0], x.device)
    weights = [w for cell in model.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    _, h, c = torch._VF.lstm(packed.data, packed.batch_sizes, (h0, c0), weights, True, len(model.cells),
                             model.lstm_drop.p, model.training, False)
    return h.index_select(1, packed.unsorted_indices), c.index_select(1, packed.unsorted_indices)


def _per_example(rows: torch.Tensor, slot: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Rows [K, ...] placed at their slots of an example-major layout [n * width, ...] (zeros elsewhere)."""
    out = rows.new_zeros((n * width,) + tuple(rows.shape[1:]))
    return out.index_copy(0, slot, rows)


def encodings(model, b):
    """The paths of the batch: context sets [E, N, d] (uncontextualized) and their mask, R_t [S, d],
    generated-leaf encodings [G + 1, d] (row 0: none), file-token encodings [U + 1, d] (row 0: none)."""
    E, N = b.n_examples, b.n_ctx
    top = lstm(model, model.embed_value(b.ctx_values), b.ctx_types, b.ctx_index, b.host["ctx"])
    ctx = _per_example(top, b.ctx_slot, E, N).view(E, N, -1)
    h, c = lstm_states(model, None, b.root_types, b.root_index, b.host["root"])
    ends = h[-1]
    if b.chain_len.shape[0]:
        start = (h.index_select(1, b.chain_example), c.index_select(1, b.chain_example))
        ends = torch.cat([ends, lstm(model, None, b.chain_types, b.chain_index, b.host["chain"], start)])
    root = ends.index_select(0, b.step_root)
    d = top.shape[-1]
    gen = top.new_zeros(1, d)
    if b.gen_len.shape[0]:
        gen = torch.cat([gen, lstm(model, model.embed_value(b.gen_values), b.gen_types, b.gen_index, b.host["gen"])])
    files = top.new_zeros(1, d)
    if b.ftok_values.shape[0]:
        files = torch.cat([files, model.encode_file_tokens(b.ftok_values)])
    return ctx, root, gen, files


def r_tilde(model, root: torch.Tensor, child: torch.Tensor) -> torch.Tensor:
    """r~ = W_r ReLU(C_i R_t) [S, d]: every C_i at once (one matrix product), then the step's own."""
    d = model.C.shape[-1]
    S = root.shape[0]
    allC = root @ model.C.permute(2, 0, 1).reshape(d, -1)                   # [S, 32 * d]
    pick = child.clamp(0, MAX_CHILD_INDEX)
    Cr = allC.view(S, -1, d).gather(1, pick.view(S, 1, 1).expand(S, 1, d)).squeeze(1)
    return model.W_r(F.relu(Cr))


def step_log_probs(model, b) -> torch.Tensor:
    """Log-probability of every step's label [S] (see the module's docstring)."""
    with torch.autocast(b.step_label.device.type, enabled=False):
        ctx, root, gen, files = encodings(model, b)
    E, N, T, Tv = b.n_examples, b.n_ctx, b.n_steps, b.n_value_steps
    S = b.step_label.shape[0]
    z_ctx = model.contextualize(ctx, b.ctx_mask)                            # once per example
    gen_paths = F.embedding(b.set_rows, gen)                                # [S', Gmax, d]
    z_gen = model.contextualize(gen_paths, b.set_mask)

    r = r_tilde(model, root, b.step_child)

    # attention of r~ over the example's context set and the step's generated set
    r_ex = _per_example(r, b.step_slot, E, T).view(E, T, -1)
    a_ctx = torch.bmm(r_ex, z_ctx.transpose(1, 2)).view(E * T, N).index_select(0, b.step_slot)
    a_ctx = a_ctx.masked_fill(~b.ctx_mask.index_select(0, b.step_example), NEG)
    G = b.set_rows.shape[1]
    a_gen = a_ctx.new_full((S, G), NEG)
    if b.set_step.shape[0]:
        sg = torch.einsum("bgd,bd->bg", z_gen, r.index_select(0, b.set_step)).masked_fill(~b.set_mask, NEG)
        a_gen = a_gen.index_copy(0, b.set_step, sg.to(a_gen.dtype))
    att = torch.cat([a_ctx, a_gen], 1).softmax(-1)
    att_ex = _per_example(att[:, :N], b.step_slot, E, T).view(E, T, N)
    zt = torch.bmm(att_ex.to(z_ctx.dtype), z_ctx).view(E * T, -1).index_select(0, b.step_slot)
    if b.set_step.shape[0]:
        zg = torch.einsum("bg,bgd->bd", att[:, N:].index_select(0, b.set_step).to(z_gen.dtype), z_gen)
        zt = zt.index_add(0, b.set_step, zg.to(zt.dtype))
    h = model.out_drop(F.relu(model.W_g(torch.cat([zt, r.to(zt.dtype)], -1))))

    out = torch.zeros(S, device=h.device, dtype=torch.float32)
    hn = h.index_select(0, b.node_step)
    lp = model.node_logits(hn).float()
    out = out.index_copy(0, b.node_step, lp.gather(1, b.step_label.index_select(0, b.node_step).unsqueeze(1)).squeeze(1))
    with torch.autocast(h.device.type, enabled=False):
        hv = h.index_select(0, b.value_step).float()
        lv = value_log_probs(model, b, hv, ctx.float(), gen.float(), files.float())
    return out.index_copy(0, b.value_step, lv)


def value_log_probs(model, b, hv, ctx, gen, files) -> torch.Tensor:
    """log p(label) of every value step [Sv]: generation over the vocabulary (+) copies of the context
    leaves (whole token, subtoken by position), of the generated leaves and of the file tokens."""
    E, N, Tv = b.n_examples, b.n_ctx, b.n_value_steps
    Sv = hv.shape[0]
    K = model.W_c.shape[0]
    label = b.step_label.index_select(0, b.value_step)
    ex = b.step_example.index_select(0, b.value_step)
    V = model.sub_emb.weight.shape[0]
    score = hv @ model.sub_emb.weight.t()                                    # [Sv, V]
    score[:, 0] = NEG
    proj = torch.einsum("kde,be->bkd", model.W_c, hv)                        # [Sv, K, d]
    # context leaves, per example: [E, Tv * K, d] x [E, d, N]
    p_ex = _per_example(proj.reshape(Sv, -1), b.value_slot, E, Tv).view(E, Tv * K, -1)
    cc = torch.bmm(p_ex, ctx.transpose(1, 2)).view(E * Tv, K, N).index_select(0, b.value_slot)
    c_sym = b.ctx_copy.index_select(0, ex).transpose(1, 2)                  # [Sv, K, N]
    copies, syms = [cc.reshape(Sv, -1)], [c_sym.reshape(Sv, -1)]
    if b.value_set.shape[1]:
        gp = F.embedding(b.value_set, gen)                                   # [Sv, G, d]
        copies.append(torch.einsum("bgd,bkd->bgk", gp, proj).reshape(Sv, -1))
        syms.append(F.embedding(b.value_set, b.gen_copy).reshape(Sv, -1))
    if getattr(model, "W_f", None) is not None and b.file_rows.shape[1] and b.ftok_values.shape[0]:
        fw = _per_example(hv @ model.W_f.t(), b.value_slot, E, Tv).view(E, Tv, -1)
        fe = F.embedding(b.file_rows, files)                                 # [E, F, d]
        fc = torch.bmm(fw, fe.transpose(1, 2)).view(E * Tv, -1).index_select(0, b.value_slot)
        copies.append(fc)
        syms.append(b.file_symbols.index_select(0, ex))
    copy = torch.cat(copies, 1)
    sym = torch.cat(syms, 1)
    valid = sym >= 0
    copy = copy.masked_fill(~valid, NEG)
    m = torch.maximum(score.max(-1, keepdim=True).values, copy.max(-1, keepdim=True).values).detach()
    e_score = (score - m).exp()
    e_copy = (copy - m).exp() * valid
    total = e_score.sum(-1) + e_copy.sum(-1)
    in_vocab = label < V
    own = e_score.gather(1, label.clamp(max=V - 1).unsqueeze(1)).squeeze(1) * in_vocab
    own = own + (e_copy * (sym == label.unsqueeze(1))).sum(-1)
    return own.clamp_min(1e-30).log() - total.log()


# ---------------------------------------------------------------- the paper's wiring


def paper_encodings(model, b):
    """The memory every set reads from (`packed.PaperBatch`): the top state of every context leaf and
    root path at p, of each at every expanded hole node (one LSTM call from their states at p along
    the maximal chains, laid out on the host), and of every generated-leaf path; and the file tokens'
    encodings [U + 1, d] (row 0: none)."""
    h, c = lstm_states(model, model.embed_value(b.ctx_values), b.ctx_types, b.ctx_index, b.host["ctx"])
    hr, cr = lstm_states(model, None, b.root_types, b.root_index, b.host["root"])
    H, C = torch.cat([h, hr], 1), torch.cat([c, cr], 1)
    parts = [H[-1]]
    if b.q_src.shape[0]:
        x = model.lstm_drop(model.embed_node(b.q_types, b.q_index))
        weights = [w for cell in model.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        out, _, _ = torch._VF.lstm(x, b.host["q"], (H.index_select(1, b.q_src), C.index_select(1, b.q_src)),
                                   weights, True, len(model.cells), model.lstm_drop.p, model.training, False)
        parts.append(out)
    if b.gen_len.shape[0]:
        parts.append(lstm(model, model.embed_value(b.gen_values), b.gen_types, b.gen_index, b.host["gen"]))
    d = H.shape[-1]
    files = H.new_zeros(1, d)
    if b.ftok_values.shape[0]:
        files = torch.cat([files, model.encode_file_tokens(b.ftok_values)])
    return torch.cat(parts), files


def set_transformer(model, x: torch.Tensor, cu: torch.Tensor, longest: int) -> torch.Tensor:
    """`model.transformer` over sets laid end to end, x [T, d] (no padding); `cu` [n + 1] int32 where
    each set starts, then the end; `longest`: the largest set's size.  The arithmetic of
    nn.TransformerEncoderLayer (post-norm, dropout after attention, in and after the feed-forward)
    with each set's attention its own: variable-length flash attention on CUDA, padded elsewhere."""
    for layer in model.transformer.layers:
        attn = layer.self_attn
        T, d = x.shape
        qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(T, 3, attn.num_heads, d // attn.num_heads)
        a = _set_attention(qkv, cu, longest, attn.dropout if layer.training else 0.0).reshape(T, d)
        x = layer.norm1(x + layer.dropout1(attn.out_proj(a)))
        x = layer.norm2(x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))
    return x


_set_transformer = set_transformer      # what paper_log_probs runs: this, or its compiled form


def compile_set_transformer() -> None:
    """From now on `paper_log_probs` runs `set_transformer` through torch.compile, with dynamic shapes
    (one graph whatever the batch's sizes): its elementwise work fused and its kernel launches fewer,
    which is what bounds an eager step on the GPU (docs/model.md has the figures)."""
    global _set_transformer
    _set_transformer = torch.compile(set_transformer, dynamic=True)


def _set_attention(qkv: torch.Tensor, cu: torch.Tensor, longest: int, p: float) -> torch.Tensor:
    """Attention of every member of a set over its own set: qkv [T, 3, H, dh] -> [T, H, dh]."""
    q, k, v = qkv.unbind(1)
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, longest, longest, p, False, False)[0]
    T = q.shape[0]
    lens = (cu[1:] - cu[:-1]).long()
    which = torch.repeat_interleave(torch.arange(len(lens), device=q.device), lens, output_size=T)
    at = torch.arange(T, device=q.device) - cu[:-1].long().index_select(0, which)
    mask = torch.arange(max(longest, 1), device=q.device) < lens.unsqueeze(1)
    mask[:, 0] |= lens == 0                  # a set of no member (none in real data): no NaN
    pad = lambda t: t.new_zeros((len(lens), max(longest, 1)) + t.shape[1:]).index_put((which, at), t)
    out = F.scaled_dot_product_attention(*(pad(t).transpose(1, 2) for t in (q, k, v)),
                                         attn_mask=mask[:, None, None, :], dropout_p=p)
    return out.transpose(1, 2)[which, at]


def _bucket_sets(b, z):
    """Each bucket's set rows [n, W] (into the memory), masks [n, W] and contextualized sets [n, W,
    d] (from `z`, set_memory's padded layout)."""
    off = 0
    for s0, n, w, v0, nv in b.buckets:
        rows = b.set_memory.narrow(0, off, n * w).view(n, w)
        valid = b.set_valid.narrow(0, off, n * w).view(n, w)
        yield rows, valid, z.narrow(0, off, n * w).view(n, w, -1)
        off += n * w


def paper_log_probs(model, b, ordered: bool = True) -> torch.Tensor:
    """Log-probability of every step's label [S] for the paper's wiring, the arithmetic of
    `batching.step_log_probs` on a `packed.PaperBatch`: the transformer once over every set laid end
    to end (`set_transformer`), the attention of R_t and the heads batched per bucket of like set
    sizes (the sets padded to the bucket's width).  `ordered`: in the
    batch's step order, else in the bucket order (`b.order` maps it)."""
    with torch.autocast(b.p_label.device.type, enabled=False):
        memory, files = paper_encodings(model, b)
    r = r_tilde(model, memory.index_select(0, b.p_root), b.p_child)
    # the transformer once over every set, end to end; then each bucket's sets padded again, zeros
    # where no path is (the attention below and the copy scores mask them)
    flat = F.embedding(b.set_memory.index_select(0, b.set_flat), memory)
    flat = _set_transformer(model, flat, b.set_cu, int(b.host["set_max"][0]))
    flat = flat.new_zeros(b.set_memory.shape[0], flat.shape[1]).index_copy(0, b.set_flat, flat)
    zts, sets = [], []
    for (s0, n, w, v0, nv), (rows, valid, z) in zip(b.buckets, _bucket_sets(b, flat)):
        att = torch.einsum("bpd,bd->bp", z, r.narrow(0, s0, n).to(z.dtype)).masked_fill(~valid, NEG).softmax(-1)
        zts.append(torch.einsum("bp,bpd->bd", att.to(z.dtype), z))
        sets.append(rows)
    zt = torch.cat(zts)
    h = model.out_drop(F.relu(model.W_g(torch.cat([zt, r.to(zt.dtype)], -1))))
    S = b.p_label.shape[0]
    lp_node = model.node_logits(h.index_select(0, b.p_node)).float()
    out = torch.zeros(S, device=h.device, dtype=torch.float32).index_copy(
        0, b.p_node, lp_node.gather(1, b.p_label.index_select(0, b.p_node).unsqueeze(1)).squeeze(1))
    with torch.autocast(h.device.type, enabled=False):
        lv = paper_value_log_probs(model, b, h.index_select(0, b.p_value).float(), sets, memory, files)
    out = out.index_copy(0, b.p_value, lv)
    return out.new_zeros(S).index_copy(0, b.order, out) if ordered else out


def _lse_pair(scores, syms, label):
    """log-sum-exp of the scores [n, k] whose symbol is valid (>= 0), and of those voting for the label."""
    tot = torch.logsumexp(scores.masked_fill(syms < 0, NEG), -1)
    own = torch.logsumexp(scores.masked_fill(syms != label.unsqueeze(1), NEG), -1)
    return tot, own


def paper_value_log_probs(model, b, hv, sets, memory, files) -> torch.Tensor:
    """log p(label) of every value step [Sv] (bucket order): generation (+) copies of the step's set
    (per bucket, one batched product over the uncontextualized paths, gathered from the memory for
    the value steps' sets alone: `sets` holds each bucket's rows) (+) copies of its example's file
    tokens."""
    label = b.p_label.index_select(0, b.p_value)
    V = model.sub_emb.weight.shape[0]
    score = hv @ model.sub_emb.weight.t()                                    # [Sv, V]
    score[:, 0] = NEG
    own = score.gather(1, label.clamp(max=V - 1).unsqueeze(1)).squeeze(1).masked_fill(label >= V, NEG)
    tots, owns = [torch.logsumexp(score, -1)], [own]
    proj = torch.einsum("kde,be->bkd", model.W_c, hv)                        # [Sv, K, d]
    K = proj.shape[1]
    off, ct, co = 0, [], []
    for (s0, n, w, v0, nv), rows in zip(b.buckets, sets):
        paths = F.embedding(rows.index_select(0, b.p_value.narrow(0, v0, nv) - s0), memory)     # [nv, W, d]
        cc = torch.bmm(paths.float(), proj.narrow(0, v0, nv).transpose(1, 2))                  # [nv, W, K]
        sym = b.set_copy.narrow(0, off, nv * w).view(nv, w * K)
        off += nv * w
        t, o = _lse_pair(cc.reshape(nv, w * K), sym, label.narrow(0, v0, nv))
        ct.append(t)
        co.append(o)
    tots.append(torch.cat(ct))
    owns.append(torch.cat(co))
    if getattr(model, "W_f", None) is not None and b.file_rows.shape[1] and b.ftok_values.shape[0]:
        E, Tv = b.n_examples, b.n_value_steps
        fw = _per_example(hv @ model.W_f.t(), b.p_value_slot, E, Tv).view(E, Tv, -1)
        fe = F.embedding(b.file_rows, files)                                 # [E, F, d]
        fc = torch.bmm(fw, fe.transpose(1, 2)).view(E * Tv, -1).index_select(0, b.p_value_slot)
        t, o = _lse_pair(fc, b.file_symbols.index_select(0, b.p_value_example), label)
        tots.append(t)
        owns.append(o)
    # A label no source of this batch votes for (a copy symbol whose paths were cut, say) would score
    # NEG, a loss of about 1e9 that swamps the batch's; floored as the reference's scores are
    # (`SLM.value_logits` clamps probabilities at 1e-30), it costs about 69 and sends no gradient.
    return (torch.logsumexp(torch.stack(owns), 0) - torch.logsumexp(torch.stack(tots), 0)).clamp_min(LOG_FLOOR)


def batch_loss(model, b) -> tuple[torch.Tensor, dict]:
    """Mean cross entropy over the batch's steps, and per-kind sums as tensors (read them when
    logging, not every step: reading is a sync).  The model's wiring picks the arithmetic: a
    paper-wiring model needs a `packed.PaperBatch`."""
    if model.cfg.context_once:
        lp, v = step_log_probs(model, b), b.step_is_value.float()
    else:
        lp = paper_log_probs(model, b, ordered=False)          # in bucket order: the sums do not care
        v = lp.new_zeros(lp.shape).index_fill(0, b.p_value, 1.0)
    loss = -lp.mean()
    with torch.no_grad():
        stats = {"nll_sum": -lp.sum(), "value_nll_sum": -(lp * v).sum()}
    return loss, stats
