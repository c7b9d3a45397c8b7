"""A Transformer seq2seq model with a copy mechanism: the SLM paper's strongest baseline (issue 21).

The paper's NMT baselines (Alon et al. 2020, section 4.2: Transformer+copy, OpenNMT's Transformer
with the copy mechanism of Gu et al. 2016) read the function's subtokens with the target replaced
by a PRED symbol and write the target as subtokens.  This is that model in the style of nanoGPT:
token and learned position embeddings, a pre-norm Transformer encoder over the source
(model/s2s_data.py: the function's pieces with HOLE for the hole) and a pre-norm decoder over the
target so far, the output matrix tied to the token embedding, and a pointer (See et al. 2017's
pointer-generator): a bilinear attention of the decoder state over the encoder states gives a
distribution over source positions, summed per source id, mixed with the generator's softmax by
a gate read from the state and the pointer's context:

    p(w) = g * softmax(E h)[w] + (1 - g) * sum over source positions s with src[s] = w of a[s]

A source piece outside the vocabulary is one of the example's OOV slots (<oov0>, ...), the same
id wherever it occurs in the source, so the pointer copies it by pointing at it; the generator
never writes a slot (nor PAD, BOS, HOLE).  Sizes are model/s2s_train.py's CONFIGS: `base` about
the SLM's parameter count (9.0M), `tiny` for tests.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode.model.s2s_data import BOS, FIRST_SLOT, FIRST_WORD, HOLE, PAD


@dataclass
class S2SConfig:
    vocab: int = 6000        # the packed data's vocab.json: specials, OOV slots, pieces
    d: int = 256
    n_head: int = 4
    d_ff: int = 1024
    enc_layers: int = 4
    dec_layers: int = 4
    max_src: int = 256       # source pieces (a longer function is cut to a window around the hole)
    max_tgt: int = 64        # target pieces, EOS included
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class S2SModel(nn.Module):
    def __init__(self, cfg: S2SConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d
        self.tok = nn.Embedding(cfg.vocab, d)
        self.src_pos = nn.Embedding(cfg.max_src, d)
        self.tgt_pos = nn.Embedding(cfg.max_tgt, d)
        self.drop = nn.Dropout(cfg.dropout)
        layer = dict(d_model=d, nhead=cfg.n_head, dim_feedforward=cfg.d_ff, dropout=cfg.dropout, activation="gelu",
                     batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer), cfg.enc_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer), cfg.dec_layers, norm=nn.LayerNorm(d))
        self.copy_q = nn.Linear(d, d, bias=False)      # the pointer: score(s) = (W h) . memory[s]
        self.gate = nn.Linear(2 * d, 1)                # g from the state and the pointer's context
        never = torch.zeros(cfg.vocab, dtype=torch.bool)
        never[[PAD, BOS, HOLE]] = True
        never[FIRST_SLOT:FIRST_WORD] = True
        self.register_buffer("never_generated", never, persistent=False)
        nn.init.normal_(self.tok.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """The encoder states [B, S, d] of the sources [B, S] (PAD-padded)."""
        pos = torch.arange(src.shape[1], device=src.device)
        x = self.drop(self.tok(src) + self.src_pos(pos))
        return self.encoder(x, src_key_padding_mask=src == PAD)

    def decode(self, memory: torch.Tensor, src: torch.Tensor, tin: torch.Tensor) -> torch.Tensor:
        """log p [B, T, vocab] of the piece after each decoder input of tin [B, T] (BOS, then the
        target so far), the generator and the pointer mixed (the module docstring's p(w)), in float32."""
        T = tin.shape[1]
        y = self.drop(self.tok(tin) + self.tgt_pos(torch.arange(T, device=tin.device)))
        causal = torch.ones(T, T, dtype=torch.bool, device=tin.device).triu(1)
        h = self.decoder(y, memory, tgt_mask=causal, memory_key_padding_mask=src == PAD)
        return self.output(h, memory, src)

    def output(self, h: torch.Tensor, memory: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """log p [B, T, vocab] from the decoder states h [B, T, d]: the generator and the pointer
        mixed (the module docstring's p(w)), in float32."""
        T = h.shape[1]
        pad = src == PAD
        gen = F.linear(h, self.tok.weight).float().masked_fill(self.never_generated, float("-inf")).log_softmax(-1)
        scores = torch.einsum("btd,bsd->bts", self.copy_q(h).float(), memory.float()) / math.sqrt(self.cfg.d)
        att = scores.masked_fill((pad | (src == HOLE))[:, None, :], float("-inf")).softmax(-1)
        ctx = torch.einsum("bts,bsd->btd", att, memory.float())
        g = self.gate(torch.cat([h.float(), ctx], -1).to(h.dtype)).float()
        copy = torch.zeros(*att.shape[:2], self.cfg.vocab, device=att.device).scatter_add_(
            2, src[:, None, :].expand(-1, T, -1), att)
        return torch.logaddexp(F.logsigmoid(g) + gen, F.logsigmoid(-g) + copy.clamp_min(1e-30).log())

    def forward(self, src: torch.Tensor, tin: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src), src, tin)

    def loss(self, src: torch.Tensor, tin: torch.Tensor, tout: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the labels tout [B, T] (PAD not counted)."""
        logp = self(src, tin)
        return F.nll_loss(logp.view(-1, logp.shape[-1]), tout.reshape(-1), ignore_index=PAD)
