"""The structural language model (Alon et al., ICML 2020), one file.

    e(n)  = E_subtoken[w]                 for a subtoken (a leaf's value: the sum of its subtokens)
          = [E_type[tau]; E_index[kappa]] for an AST node (tau, kappa)
    H     = LSTM(e(n_1), ..., e(n_k))     for every path in S_t, leaf first      (3.1)
    r     = LSTM over the root path R_t
    Z     = Transformer(H)                no positions: S_t is a set               (3.2)
    r~    = W_r ReLU(C_i r)               i: child index of the node to predict
    a     = softmax(Z r~),  z~ = sum_j a_j Z_j
    h~    = ReLU(W_g [z~; r~])
    node:  softmax(E_type P h~)                                                     (3.3)
    value: s(w) = E_subtoken[w] h~  (+)  H_l W_c h~ for leaves whose token is w
                                    (+)  H_l W_c,i h~ for leaves whose i-th subtoken is w  (App. D)
                                    (+)  f_j W_f h~ for file tokens whose token is w
           where (+) sums in probability space (log-sum-exp), then a softmax.
    file tokens (file_tokens > 0, not in the paper): the file's most frequent identifiers outside the
           function (features.outside_identifiers), each encoded f_j = LSTM(its value) alone; copied
           whole, by their own matrix W_f.  They reach the value head only.

The network is exposed as the pieces decoding needs, so that training (batched
over every step of many examples) and inference (ONNX graphs, beam search) run
the same arithmetic:
  * `lstm_step` / `encode`: the path LSTM, one step or a whole padded sequence;
    prefix caching is `encode` once, then `lstm_step` per node of the suffix;
  * `aggregate`: paths + root path + child index -> h~;
  * `node_logits`, `value_logits`: the two output heads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode.model.vocab import MAX_CHILD_INDEX

NEG = -1e9


@dataclass
class SLMConfig:
    n_types: int = 256
    n_subtokens: int = 1000
    d_type: int = 384           # E_type; with d_index makes the node embedding
    d_index: int = 128
    d_subtoken: int = 512       # also the size of h~ (it scores E_type and E_subtoken)
    d_lstm: int = 256
    lstm_layers: int = 2
    n_layers: int = 4           # transformer over the set of paths
    n_heads: int = 8
    d_ff: int = 1024
    max_copy_positions: int = 8 # subtoken positions with their own copy matrix
    dropout: float = 0.25       # transformer
    lstm_dropout: float = 0.5   # on the LSTM's inputs and between its layers
    # False: the paper's S_t (context paths run to pi_t, one transformer over all of S_t each step).
    # True, an experiment for speed (docs/bench.md): context paths end at the hole's parent p and are
    # contextualized alone, once per example; the generated paths are contextualized alone each step;
    # the root-path attention and the heads read both.  Same parameters, so either can start from the other.
    context_once: bool = False
    # identifiers of the file outside the function copied whole (features.outside_identifiers); 0: none
    file_tokens: int = 0

    @property
    def d_node(self) -> int:
        return self.d_type + self.d_index


class SLM(nn.Module):
    def __init__(self, cfg: SLMConfig):
        super().__init__()
        assert cfg.d_node == cfg.d_subtoken, "node and subtoken embeddings share the LSTM input"
        self.cfg = cfg
        self.type_emb = nn.Embedding(cfg.n_types, cfg.d_type, padding_idx=0)
        self.index_emb = nn.Embedding(MAX_CHILD_INDEX + 1, cfg.d_index)
        self.sub_emb = nn.Embedding(cfg.n_subtokens, cfg.d_subtoken, padding_idx=0)
        self.cells = nn.ModuleList(
            nn.LSTMCell(cfg.d_subtoken if k == 0 else cfg.d_lstm, cfg.d_lstm) for k in range(cfg.lstm_layers))
        self.lstm_drop = nn.Dropout(cfg.lstm_dropout)
        layer = nn.TransformerEncoderLayer(cfg.d_lstm, cfg.n_heads, cfg.d_ff, cfg.dropout, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.C = nn.Parameter(torch.randn(MAX_CHILD_INDEX + 1, cfg.d_lstm, cfg.d_lstm) * cfg.d_lstm ** -0.5)
        self.W_r = nn.Linear(cfg.d_lstm, cfg.d_lstm)
        self.W_g = nn.Linear(2 * cfg.d_lstm, cfg.d_subtoken)
        self.W_c = nn.Parameter(torch.randn(1 + cfg.max_copy_positions, cfg.d_lstm, cfg.d_subtoken) * cfg.d_lstm ** -0.5)
        self.to_type = nn.Linear(cfg.d_subtoken, cfg.d_type, bias=False)   # h~ lives in the subtoken space
        if cfg.file_tokens:
            # starts as the context leaves' whole-token copy matrix (a model trained without file tokens)
            self.W_f = nn.Parameter(self.W_c.detach()[0].clone())
        self.out_drop = nn.Dropout(cfg.dropout)

    # ------------------------------------------------------------ embeddings

    def embed_node(self, types: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.type_emb(types), self.index_emb(index.clamp(0, MAX_CHILD_INDEX))], -1)

    def embed_value(self, subtokens: torch.Tensor) -> torch.Tensor:
        """[..., S] subtoken ids (0 = padding) -> [..., d] their sum."""
        return self.sub_emb(subtokens).sum(-2)

    # ------------------------------------------------------------ path LSTM

    def initial_state(self, n: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(self.cfg.lstm_layers, n, self.cfg.d_lstm, device=device)
        return z, z.clone()

    def lstm_step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the stacked LSTM.  x [N, d], h and c [layers, N, d_lstm]."""
        hs, cs = [], []
        inp = x
        for k, cell in enumerate(self.cells):
            hk, ck = cell(self.lstm_drop(inp), (h[k], c[k]))
            hs.append(hk)
            cs.append(ck)
            inp = hk
        return torch.stack(hs), torch.stack(cs)

    def encode(self, first: torch.Tensor | None, types: torch.Tensor, index: torch.Tensor,
               lengths: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Run the LSTM over padded paths and return each path's state after its own last node.

        first: [N, d] the leaf's value embedding, read before the nodes (None for root paths);
        types, index: [N, L] the nodes, leaf first; lengths: [N] nodes per path (may be 0).
        From the zero state, the whole stack runs as one fused LSTM over packed sequences (cuDNN on
        CUDA): the same arithmetic as `lstm_step` per node, in a few kernels instead of a few per node."""
        if state is None:
            return self._encode_packed(first, types, index, lengths)
        n, L = types.shape
        h, c = state if state is not None else self.initial_state(n, types.device)
        if first is not None:
            h, c = self.lstm_step(first, h, c)
        x = self.embed_node(types, index)
        for t in range(L):
            nh, nc = self.lstm_step(x[:, t], h, c)
            keep = (t < lengths).view(1, n, 1)
            h = torch.where(keep, nh, h)
            c = torch.where(keep, nc, c)
        return h, c

    def _encode_packed(self, first, types, index, lengths):
        n = types.shape[0]
        h0, c0 = self.initial_state(n, types.device)
        x = self.embed_node(types, index)
        if first is not None:
            x = torch.cat([first.unsqueeze(1), x], 1)
            lengths = lengths + 1
        if n == 0 or x.shape[1] == 0:
            return h0, c0
        packed = nn.utils.rnn.pack_padded_sequence(self.lstm_drop(x), lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        weights = [w for cell in self.cells for w in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
        # dropout between layers, as lstm_step applies it to every layer's input
        _, h, c = torch._VF.lstm(packed.data, packed.batch_sizes, (h0, c0), weights, True, len(self.cells),
                                 self.lstm_drop.p, self.training, False)
        h, c = h.index_select(1, packed.unsorted_indices), c.index_select(1, packed.unsorted_indices)
        empty = (lengths == 0).view(1, n, 1)
        return h.masked_fill(empty, 0.0), c.masked_fill(empty, 0.0)

    # ------------------------------------------------------------ aggregation and heads

    def contextualize(self, paths: torch.Tensor, mask: torch.Tensor, transformer=None) -> torch.Tensor:
        """The transformer over each set of paths [B, P, d_lstm] alone; padding and sets of no
        path come out zero (a set of no path attends to one zero path, not to nothing: no NaN).
        `transformer(x, padding)`: the same layers written another way (the ONNX export's)."""
        if paths.shape[1] == 0:
            return paths
        keys = mask.clone()
        keys[:, 0] = keys[:, 0] | ~mask.any(1)
        x = paths.masked_fill(~mask.unsqueeze(-1), 0.0)
        z = self.transformer(x, src_key_padding_mask=~keys) if transformer is None else transformer(x, ~keys)
        return z.masked_fill(~mask.unsqueeze(-1), 0.0)

    def aggregate(self, paths: torch.Tensor, mask: torch.Tensor, root: torch.Tensor, child_index: torch.Tensor,
                  z: torch.Tensor | None = None):
        """paths [B, P, d_lstm] (top-layer LSTM outputs), mask [B, P] True where a path is,
        root [B, d_lstm], child_index [B] -> h~ [B, d_subtoken].  `z`: the paths contextualized
        already (context_once), else the transformer runs over each set here."""
        if z is None:
            z = self.transformer(paths, src_key_padding_mask=~mask)
        # C_i as an embedding lookup: the same Gather, but its backward sums duplicate indices
        # efficiently (plain indexing's accumulate is serial per index on CUDA: slow in training)
        d = self.C.shape[-1]
        C = F.embedding(child_index.clamp(0, MAX_CHILD_INDEX), self.C.view(self.C.shape[0], -1)).view(-1, d, d)
        r = self.W_r(F.relu(torch.bmm(C, root.unsqueeze(-1)).squeeze(-1)))
        att = torch.einsum("bpd,bd->bp", z, r).masked_fill(~mask, NEG).softmax(-1)
        zt = torch.einsum("bp,bpd->bd", att, z)
        return self.out_drop(F.relu(self.W_g(torch.cat([zt, r], -1))))

    def node_logits(self, h: torch.Tensor) -> torch.Tensor:
        return (self.to_type(h) @ self.type_emb.weight.t()).log_softmax(-1)

    def copy_scores(self, h: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """[B, P, 1 + max_copy_positions]: copying each leaf's whole token, then its i-th subtoken."""
        proj = torch.einsum("kde,be->bkd", self.W_c, h)                      # [B, K, d_lstm]
        return torch.einsum("bpd,bkd->bpk", paths, proj)

    def encode_file_tokens(self, values: torch.Tensor) -> torch.Tensor:
        """[F, S] file tokens' subtoken ids -> [F, d_lstm] their encodings: the top LSTM layer after
        the value alone (a path's first step from the zero state)."""
        h, _ = self.lstm_step(self.embed_value(values), *self.initial_state(values.shape[0], values.device))
        return h[-1]

    def file_copy_scores(self, h: torch.Tensor, files: torch.Tensor) -> torch.Tensor:
        """[B, F]: copying each file token whole; files [B, F, d_lstm] their encodings."""
        return torch.einsum("bfd,bd->bf", files, h @ self.W_f.t())

    def value_logits(self, h: torch.Tensor, paths: torch.Tensor, copy_symbols: torch.Tensor,
                     n_symbols: int, files: torch.Tensor | None = None,
                     file_symbols: torch.Tensor | None = None) -> torch.Tensor:
        """Scores over the symbols of each example: the subtoken vocabulary first
        (ids 0..n_subtokens-1), then the example's own tokens and subtokens.

        copy_symbols [B, P, 1 + max_copy_positions]: the symbol each copy score
        votes for (-1 where none); files [B, F, d_lstm] and file_symbols [B, F]
        the same for file tokens (file_tokens models).  Scores for one symbol are
        summed in probability space.  Returns [B, n_symbols] log-probabilities."""
        B = h.shape[0]
        gen = h @ self.sub_emb.weight.t()                                    # [B, V]
        gen[:, 0] = NEG                                                      # padding is never a value
        scores = torch.full((B, n_symbols), NEG, device=h.device, dtype=gen.dtype)
        scores[:, : gen.shape[1]] = gen
        copy = self.copy_scores(h, paths).reshape(B, -1)
        sym = copy_symbols.reshape(B, -1)
        if file_symbols is not None and file_symbols.shape[1]:
            copy = torch.cat([copy, self.file_copy_scores(h, files)], 1)
            sym = torch.cat([sym, file_symbols], 1)
        valid = sym >= 0
        copy = copy.masked_fill(~valid, NEG)
        sym = sym.clamp(min=0)
        # log-sum-exp of (generation score, every copy score) per symbol
        m = torch.maximum(scores.max(-1, keepdim=True).values, copy.max(-1, keepdim=True).values).detach()
        total = (scores - m).exp()
        total = total.scatter_add(1, sym, (copy - m).exp() * valid)
        return (total.clamp_min(1e-30).log() + m).log_softmax(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def config_dict(self) -> dict:
        return asdict(self.cfg)
