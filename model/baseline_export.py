"""`anycode s2s export` / `anycode fim export`: a baseline of issue 21 as ONNX graphs the server runs
(model/baseline_runtime.py), torch-free, as `anycode export` does for the SLM.

    anycode s2s export --model RUN --out DIR [--precision fp16|fp32|int8]
    anycode fim export --model RUN --out DIR [--precision fp16|fp32|int8]

RUN is a run folder of `anycode s2s train` / `anycode fim train` (best.pt, else ckpt.pt, else the
fp16 weights joined as slm.pt with config.json), with its vocab.json / tokenizer.json.

The seq2seq model (model/s2s.py), two graphs, the search's two calls (model/s2s_search.py):

  s2s_encoder.onnx  src [1, S]                               -> memory [1, S, d]
  s2s_decoder.onnx  memory [1, S, d], src [1, S], prefix [n, T] -> logp [n, vocab]
                    the piece after each of n target prefixes (BOS first), the generator and the
                    pointer mixed, as `S2SModel.decode` at the prefix's last position.

The FIM model (model/fim.py), one graph, the prompt once and then one token per hypothesis:

  fim_step.onnx     tokens [n, T], past [layers, 2, n, heads, P, head_dim]
                    -> logp [n, vocab] after the last token, present [layers, 2, n, heads, P + T, head_dim]
                    (P = 0 for the prompt); `FimModel.forward` with its key-value cache.

`--precision fp16` (the default) stores weights fp16 with a Cast after each (export.py's
`_store_fp16`): half the size, fp32 arithmetic, nothing lost for weights trained and brought back in
fp16; `int8` quantizes the MatMul weights (export.py's `_quantize_int8`).  DIR receives the graphs,
the vocabulary, config.json and manifest.json (`kind`, `language`, the sizes and sha256 of every
file, checked at load as the SLM's are: runtime.load_manifest).  tests/test_baseline_serving.py
holds the graphs' candidates to the torch evaluation's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode import grammars
from anycode.model.export import OPSET, _export, _quantize_int8, _Reshape, _store_fp16, file_entries
from anycode.model.s2s_data import PAD

FORMAT_VERSION = 1
GRAPHS = {"s2s": ("s2s_encoder.onnx", "s2s_decoder.onnx"), "fim": ("fim_step.onnx",)}
VOCAB_FILES = {"s2s": "vocab.json", "fim": "tokenizer.json"}


def _attention(attn: nn.MultiheadAttention, x, kv, mask):
    """nn.MultiheadAttention(x, kv, kv) in eval mode, `mask` [.., Tq, Tk] True where a query may look,
    its sizes from the inputs (the module's own traces them as constants)."""
    d, heads = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = F.linear(x, w[:d], b[:d]), F.linear(kv, w[d:2 * d], b[d:2 * d]), F.linear(kv, w[2 * d:], b[2 * d:])
    q, k, v = (_Reshape.apply(t, (0, -1, heads, d // heads)).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(_Reshape.apply(y.transpose(1, 2), (0, -1, d)))


def _feed_forward(layer, x):
    return layer.linear2(layer.activation(layer.linear1(x)))


class S2SEncoder(nn.Module):
    """`S2SModel.encode` (pre-norm layers, model/s2s.py) for one source."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, src):
        m = self.m
        x = m.tok(src) + m.src_pos(torch.arange(src.shape[1], device=src.device))
        keep = (src != PAD)[:, None, None, :]
        for layer in m.encoder.layers:
            y = layer.norm1(x)
            x = x + _attention(layer.self_attn, y, y, keep)
            x = x + _feed_forward(layer, layer.norm2(x))
        return m.encoder.norm(x)


class S2SDecoder(nn.Module):
    """`S2SModel.decode` at the last position of n target prefixes, over one source's memory."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, memory, src, prefix):
        m, n = self.m, prefix.shape[0]
        pos = torch.arange(prefix.shape[1], device=prefix.device)
        x = m.tok(prefix) + m.tgt_pos(pos)
        causal = pos[None, :] <= pos[:, None]
        keep = (src != PAD)[:, None, None, :]
        for layer in m.decoder.layers:
            y = layer.norm1(x)
            x = x + _attention(layer.self_attn, y, y, causal)
            x = x + _attention(layer.multihead_attn, layer.norm2(x), memory.expand(n, -1, -1), keep)
            x = x + _feed_forward(layer, layer.norm3(x))
        h = m.decoder.norm(x[:, -1:])
        return m.output(h, memory.expand(n, -1, -1), src.expand(n, -1))[:, -1]


class FimStep(nn.Module):
    """`FimModel.forward` over a cache as one tensor; the causal mask from positions (the model's own
    `tril(diagonal=P)` would trace P as a constant)."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, tokens, past):
        m, T = self.m, tokens.shape[1]
        P = past.shape[4]
        pos = torch.arange(T, device=tokens.device) + P
        x = m.tok(tokens) + m.pos(pos)
        keys = torch.arange(P + T, device=tokens.device)
        mask = keys[None, :] <= pos[:, None]
        present = []
        for i, block in enumerate(m.blocks):
            a = block.attn
            B, d = x.shape[0], x.shape[2]
            q, k, v = a.qkv(block.ln1(x)).split(d, dim=2)
            q, k, v = (t.view(B, T, a.n_head, d // a.n_head).transpose(1, 2) for t in (q, k, v))
            k, v = torch.cat([past[i, 0], k], dim=2), torch.cat([past[i, 1], v], dim=2)
            present.append(torch.stack([k, v]))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + a.proj(y.transpose(1, 2).reshape(B, T, d))
            x = x + block.mlp(block.ln2(x))
        logits = F.linear(m.ln(x[:, -1]), m.tok.weight)
        return logits.float().log_softmax(-1), torch.stack(present)


def _logaddexp(g, a, b):
    """aten::logaddexp, which the exporter lacks: max + softplus(min - max), exact where one side is
    finite (the decoder's copy side always is: log of at least 1e-30)."""
    m = g.op("Max", a, b)
    return g.op("Add", m, g.op("Softplus", g.op("Sub", g.op("Min", a, b), m)))


def _export_s2s(model, out: Path) -> dict:
    cfg = model.cfg
    src = torch.randint(0, cfg.vocab, (1, 7))
    memory = model.encode(src)
    _export(S2SEncoder(model), (src,), out / GRAPHS["s2s"][0], ["src"], ["memory"],
            {"src": {1: "s"}, "memory": {1: "s"}})
    torch.onnx.register_custom_op_symbolic("aten::logaddexp", _logaddexp, OPSET)
    try:
        _export(S2SDecoder(model), (memory, src, torch.randint(0, cfg.vocab, (3, 2))), out / GRAPHS["s2s"][1],
                ["memory", "src", "prefix"], ["logp"],
                {"memory": {1: "s"}, "src": {1: "s"}, "prefix": {0: "n", 1: "t"}, "logp": {0: "n"}})
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::logaddexp", OPSET)
    return cfg.to_dict()


def _export_fim(model, out: Path) -> dict:
    cfg = model.cfg
    past = torch.zeros(cfg.n_layer, 2, 3, cfg.n_head, 4, cfg.d // cfg.n_head)
    _export(FimStep(model), (torch.randint(0, cfg.vocab, (3, 2)), past), out / GRAPHS["fim"][0],
            ["tokens", "past"], ["logp", "present"],
            {"tokens": {0: "n", 1: "t"}, "past": {2: "n", 4: "p"}, "logp": {0: "n"}, "present": {2: "n", 4: "pt"}})
    return cfg.to_dict()


def export(kind: str, model, vocab_file: Path, out: Path, lang: str, precision: str = "fp16",
           spm: bool = False) -> dict:
    """Write `kind`'s graphs of `model` (torch, in eval mode), its vocabulary file and the manifest
    into `out`; returns the manifest.  `spm`: the FIM model is asked in SPM order (the server reads
    it from the manifest's model config), the order its evaluation found better."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, not {precision!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)      # the fused encoder-layer kernel has no ONNX form
    try:
        with torch.no_grad():
            conf = (_export_s2s if kind == "s2s" else _export_fim)(model, out)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if kind == "fim":
        conf = {**conf, "spm": spm}
    for name in GRAPHS[kind]:
        if precision == "int8":
            _quantize_int8(out / name)
        elif precision != "fp32":
            _store_fp16(out / name, keep=())
    if Path(vocab_file).resolve() != (out / VOCAB_FILES[kind]).resolve():
        shutil.copy(vocab_file, out / VOCAB_FILES[kind])
    (out / "config.json").write_text(json.dumps({"kind": kind, "language": lang, "model": conf}, indent=1))
    files = list(GRAPHS[kind]) + [VOCAB_FILES[kind], "config.json"]
    manifest = {"format": FORMAT_VERSION, "kind": kind, "language": lang, "precision": precision, "opset": OPSET,
                "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": conf,
                "parameters": sum(p.numel() for p in model.parameters()), "files": file_entries(out, files)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", type=Path, required=True, help="a run folder of `anycode s2s|fim train`")
    ap.add_argument("--out", type=Path, required=True, help="the model directory to write (`anycode serve "
                                                            "--model s2s|fim --model-path DIR` serves it)")
    ap.add_argument("--precision", choices=["fp16", "fp32", "int8"], default="fp16")
    ap.add_argument("--spm", action="store_true", help="fim: the server prompts in SPM order instead of PSM "
                                                       "(as `anycode fim eval --spm`)")


def run(args) -> int:
    t0 = time.perf_counter()
    kind = args.kind
    if kind == "s2s":
        from anycode.model.s2s_eval import load_run
    else:
        from anycode.model.fim_eval import load_run
    vocab_file = args.model / VOCAB_FILES[kind]
    if not vocab_file.exists():
        print(f"error: {args.model} has no {VOCAB_FILES[kind]}: not a run folder of `anycode {kind} train`",
              file=sys.stderr)
        return 2
    if args.spm and kind != "fim":
        print("error: --spm is the fim model's prompt order; the s2s model has none", file=sys.stderr)
        return 2
    model = load_run(args.model)[0]
    manifest = export(kind, model, vocab_file, args.out, grammars.of_model(args.model).id, args.precision, args.spm)
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"exported the {kind} model, {manifest['parameters'] / 1e6:.1f}M parameters ({args.precision}), to "
          f"{args.out}: {total / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return 0
