"""A fill-in-the-middle token model: the baseline the SLM is measured against (issue 21).

A decoder-only transformer over byte-level BPE tokens (model/fim_tokenizer.py), in the style of
nanoGPT: token and learned position embeddings, pre-norm blocks of causal self-attention and a GELU
MLP, a final norm, the output matrix tied to the token embedding.  It reads the prefix and the suffix
of a hole between sentinel tokens and writes the middle (Bavarian et al. 2022, "Efficient Training of
Language Models to Fill in the Middle"; model/fim_data.py builds the sequences).

`forward` takes an optional cache of each layer's keys and values, so that the search
(model/fim_eval.py) reads the prompt once and then feeds one token per hypothesis.

The sizes are model/fim_train.py's CONFIGS: `base` about the SLM's parameter count, `large` about
four times it, `tiny` for tests.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode.model.fim_tokenizer import PAD


@dataclass
class FimConfig:
    vocab: int = 16384       # the tokenizer's size
    block: int = 1024        # the longest sequence, in tokens (prompt and middle together)
    n_layer: int = 6
    n_head: int = 8
    d: int = 256
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class SelfAttention(nn.Module):
    def __init__(self, cfg: FimConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d, 3 * cfg.d, bias=False)
        self.proj = nn.Linear(cfg.d, cfg.d, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """x [B, T, d]; past (keys, values) [B, H, S, hd] of the S positions before x.  With a past,
        the T new positions see all of it and, causally, each other."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        S = k.shape[2] - T
        if S == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
        else:    # new query i sees the past and new keys up to i
            mask = torch.ones(T, S + T, dtype=torch.bool, device=x.device).tril(diagonal=S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, d)
        return self.drop(self.proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, cfg: FimConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d), nn.LayerNorm(cfg.d)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d, 4 * cfg.d, bias=False), nn.GELU(),
                                 nn.Linear(4 * cfg.d, cfg.d, bias=False), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, past: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        a, kv = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class FimModel(nn.Module):
    def __init__(self, cfg: FimConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d)
        self.pos = nn.Embedding(cfg.block, cfg.d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln = nn.LayerNorm(cfg.d)
        self.apply(self._init)
        for name, p in self.named_parameters():     # GPT-2's scaled init of the residual projections
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, past: list | None = None) -> tuple[torch.Tensor, list]:
        """Logits [B, T, vocab] of the token after each position of idx [B, T], and every layer's
        (keys, values) with idx's positions added to `past`."""
        start = 0 if past is None else past[0][0].shape[2]
        T = idx.shape[1]
        if start + T > self.cfg.block:
            raise ValueError(f"{start + T} positions, the model's block is {self.cfg.block}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i])
            cache.append(kv)
        return F.linear(self.ln(x), self.tok.weight), cache

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the targets y [B, T] given x [B, T]; padding targets are not counted."""
        logits, _ = self(x)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD)
