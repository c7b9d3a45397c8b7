"""The code-search encoders: a function and a query to vectors whose inner product ranks functions.

The function has two sides (issue 23, after the code2vec + LLM fusion paper):

- structural: code2vec over the function's path-contexts.  A context is (start leaf, path, end
  leaf); a leaf is the mean of its subtokens' embeddings, a path the mean of its nodes' type,
  direction (up, top, down) and position embeddings.  The three are concatenated and mapped by a
  tanh layer to a context vector; an attention vector weights the contexts (softmax over them) into
  one vector, code2vec's code vector;
- semantic: a small transformer over the function's subtokens, mean-pooled.  The paper takes
  Code Llama's embeddings; no pretrained model is reachable here, so it learns from the corpus.

The fusion (`SearchConfig.fusion`): "concat" ([semantic; structural], twice as wide), "sum"
(w1 * semantic + w2 * structural, w learned), "attention" (multi-head self-attention over the two
vectors, a feed-forward layer, mean of the two), or one side alone: "structural", "semantic".
The query side is a small transformer over the query's words, mean-pooled, projected to the
fused width.  Subtoken embeddings are shared by query words, code subtokens and path ends.

Training minimises the paper's equation (2): in a batch of N pairs, the softmax cross-entropy of
each query's inner products with the N functions, its own being the target.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG_MASK = -1e4
FUSIONS = ("concat", "sum", "attention", "structural", "semantic")


@dataclass
class SearchConfig:
    n_subtokens: int
    n_node_types: int
    path_nodes: int = 9
    d: int = 192
    heads: int = 4
    code_layers: int = 2
    query_layers: int = 2
    max_code: int = 200
    max_query: int = 32
    dropout: float = 0.1
    fusion: str = "concat"

    def to_dict(self) -> dict:
        return asdict(self)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of x [B, T, d] where mask [B, T] is true; zeros where no position is."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class TextEncoder(nn.Module):
    """Token ids [B, T] (0 = padding) to one vector [B, d]: a pre-norm transformer, mean-pooled."""

    def __init__(self, emb: nn.Embedding, cfg: SearchConfig, max_len: int, layers: int):
        super().__init__()
        self.emb = emb
        self.pos = nn.Parameter(torch.zeros(max_len, cfg.d))
        layer = nn.TransformerEncoderLayer(cfg.d, cfg.heads, 4 * cfg.d, cfg.dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d)
        self.for_export = False        # model/search_export.py: the layers as `layer_for_export` writes them

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids[:, : self.pos.shape[0]]          # a text longer than the encoder's cap is read up to it
        mask = ids != 0
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask[:, 1:]], 1)   # an empty text attends to its pad
        x = self.emb(ids) + self.pos[: ids.shape[1]]
        if self.for_export:
            for layer in self.layers.layers:
                x = layer_for_export(layer, x, mask)
        else:
            x = self.layers(x, src_key_padding_mask=~mask)
        return masked_mean(self.norm(x), mask)


def layer_for_export(layer: nn.TransformerEncoderLayer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`layer` (pre-norm, GELU, eval mode) on x [B, T, d] with `mask` [B, T] true where a token is, written
    with shapes left to the input: torch's fused attention traced to ONNX keeps the traced length, and
    the runtime cuts each batch to its longest text."""
    attn = layer.self_attn
    b, d, heads = x.shape[0], x.shape[-1], attn.num_heads
    h = layer.norm1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) * (d // heads) ** -0.5 + (~mask)[:, None, None, :].to(x.dtype) * NEG_MASK
    a = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, -1, d)
    x = x + attn.out_proj(a)
    return x + layer.linear2(F.gelu(layer.linear1(layer.norm2(x))))


class PathContextEncoder(nn.Module):
    """code2vec: contexts [B, K, 3] (start end, path, end end ids) to one vector [B, d]."""

    def __init__(self, emb: nn.Embedding, cfg: SearchConfig, path_types: torch.Tensor,
                 path_dirs: torch.Tensor, end_subs: torch.Tensor):
        super().__init__()
        self.emb = emb
        self.register_buffer("path_types", path_types.long(), persistent=False)
        self.register_buffer("path_dirs", path_dirs.long(), persistent=False)
        self.register_buffer("end_subs", end_subs.long(), persistent=False)
        self.type_emb = nn.Embedding(cfg.n_node_types, cfg.d, padding_idx=0)
        self.dir_emb = nn.Embedding(4, cfg.d, padding_idx=0)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.path_nodes, cfg.d))
        self.context = nn.Linear(3 * cfg.d, cfg.d, bias=False)
        self.attend = nn.Parameter(torch.randn(cfg.d) / cfg.d ** 0.5)
        self.drop = nn.Dropout(cfg.dropout)

    def leaf(self, end_ids: torch.Tensor) -> torch.Tensor:
        subs = self.end_subs[end_ids]                                  # [B, K, S]
        return masked_mean(self.emb(subs).flatten(0, 1), (subs != 0).flatten(0, 1)).view(*end_ids.shape, -1)

    def path(self, path_ids: torch.Tensor) -> torch.Tensor:
        types, dirs = self.path_types[path_ids], self.path_dirs[path_ids]   # [B, K, L]
        x = self.type_emb(types) + self.dir_emb(dirs) + self.pos_emb[: types.shape[-1]]
        return masked_mean(x.flatten(0, 1), (types != 0).flatten(0, 1)).view(*path_ids.shape, -1)

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        mask = ctx[..., 1] != 0                                        # [B, K]
        parts = torch.cat([self.leaf(ctx[..., 0]), self.path(ctx[..., 1]), self.leaf(ctx[..., 2])], -1)
        c = torch.tanh(self.context(self.drop(parts)))                 # [B, K, d]
        score = (c @ self.attend).masked_fill(~mask, -1e4)
        a = torch.softmax(score, -1) * mask.to(c.dtype)
        return (a.unsqueeze(-1) * c).sum(1)


class AttentionFusion(nn.Module):
    """Multi-head self-attention over the two sides' vectors, then a feed-forward layer (eq. 5)."""

    def __init__(self, cfg: SearchConfig):
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.d, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d), nn.LayerNorm(cfg.d)
        self.ff = nn.Sequential(nn.Linear(cfg.d, 4 * cfg.d), nn.GELU(), nn.Linear(4 * cfg.d, cfg.d))
        self.side = nn.Parameter(torch.zeros(2, cfg.d))               # which vector is which

    def forward(self, semantic: torch.Tensor, structural: torch.Tensor) -> torch.Tensor:
        x = torch.stack([semantic, structural], 1) + self.side
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ff(self.norm2(x))
        return x.mean(1)


class SearchModel(nn.Module):
    def __init__(self, cfg: SearchConfig, tables: dict[str, torch.Tensor]):
        super().__init__()
        if cfg.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}")
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.n_subtokens, cfg.d, padding_idx=0)
        nn.init.normal_(self.emb.weight, std=0.02)
        self.query = TextEncoder(self.emb, cfg, cfg.max_query, cfg.query_layers)
        self.semantic = TextEncoder(self.emb, cfg, cfg.max_code, cfg.code_layers) if cfg.fusion != "structural" else None
        self.structural = PathContextEncoder(self.emb, cfg, tables["path_types"], tables["path_dirs"],
                                             tables["end_subs"]) if cfg.fusion != "semantic" else None
        width = 2 * cfg.d if cfg.fusion == "concat" else cfg.d
        self.weights = nn.Parameter(torch.ones(2)) if cfg.fusion == "sum" else None
        self.attention = AttentionFusion(cfg) if cfg.fusion == "attention" else None
        self.query_out = nn.Linear(cfg.d, width)
        self.code_out = nn.Linear(width, width)

    def encode_code(self, code: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        f = self.cfg.fusion
        sem = self.semantic(code) if self.semantic is not None else None
        st = self.structural(ctx) if self.structural is not None else None
        if f == "concat":
            v = torch.cat([sem, st], -1)
        elif f == "sum":
            v = self.weights[0] * sem + self.weights[1] * st
        elif f == "attention":
            v = self.attention(sem, st)
        else:
            v = sem if sem is not None else st
        return self.code_out(v)

    def encode_query(self, query: torch.Tensor) -> torch.Tensor:
        return self.query_out(self.query(query))

    def forward(self, query: torch.Tensor, code: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """The loss of equation (2) over the batch."""
        q, c = self.encode_query(query), self.encode_code(code, ctx)
        logits = q @ c.t()
        return F.cross_entropy(logits.float(), torch.arange(len(q), device=q.device))
