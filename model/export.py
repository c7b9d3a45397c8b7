"""`anycode export`: the SLM as the ONNX graphs decoding runs (model/beam.py, model/runtime.py).

    anycode export --checkpoint DIR --out model/shipped [--precision int8|fp16|fp32]
    anycode export --untrained DATASET_DIR --out DIR      (random weights, for tests and benchmarks)

DIR is a run directory of `anycode train` or a shipped checkpoint (config.json,
vocab.json, best.pt / slm.pt / ckpt.pt, grammar.json when the data had one).

Three graphs, exact rewrites of `SLM`'s pieces (tests/test_onnx_parity.py):

  lstm_value.onnx  values [N, S]                  -> h, c [layers, N, d]
                   the first LSTM step of a path: a leaf's value (the sum of its
                   subtoken embeddings) read from the zero state;
  lstm_node.onnx   types [N], index [N], h, c     -> h', c'
                   one LSTM step into an AST node, for any mix of paths.  The
                   first layer's input projection of a node, W_ih [E_type; E_index]
                   + biases, is a gather from two precomputed fp32 tables;
  score.onnx       paths [B, P, d], mask [B, P], root [B, d], child_index [B],
                   copy_symbols [B, P, K]         -> node_logp [B, T], value_logp [B, M]
                   aggregate + node head + value head for every beam of a request.
                   The symbol axis is padded to M = n_subtokens + max_paths * K
                   (every symbol a request can have); pads score log 0.

A model with file tokens (SLMConfig.file_tokens) gives score.onnx two more inputs,
files [F, d] (the file tokens encoded by lstm_value, top layer) and file_symbols [F]
(their symbols, -1 = none), the same for every beam of the request; the symbol
axis grows by file_tokens.

A context_once model (SLMConfig) adds

  contextualize.onnx  paths [B, P, d], mask [B, P] -> z [B, P, d]
                   the transformer over each set alone (the context once per request,
                   each step's generated paths), and its score.onnx takes z as a sixth
                   input instead of running the transformer.

Paths are encoded step by step (value, then one node per call) rather than by a
graph padded to max_length, so that a request pays for the nodes its paths
have, not for 24 per path, and states are reusable at every node (beam.py).

With `--precision fp16` weights are stored fp16 with a Cast after each,
which ONNX Runtime folds at load: the files are half the size, the arithmetic
stays fp32, and weights that were fp16 already (the shipped checkpoint) lose
nothing.

The out directory receives the graphs, config.json, vocab.json, grammar.json and
manifest.json (sizes and sha256 of every file, checked at load).

`int8` (the default of the command, what ships) quantizes the MatMul weights of every graph
dynamically, the LSTM graphs included; the embedding tables stay fp32.  docs/bench.md has what it
gains in speed and costs in accuracy.  On the CUDA provider the runtime turns the int8 graphs back
into float graphs at load (model/float_graphs.py).  The torch
reference the parity tests hold these graphs to is model/torch_backend.py.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from anycode import grammars
from anycode.model.checkpoint import load_model
from anycode.model.features import MAX_VALUE_SUBTOKENS
from anycode.model.runtime import graphs_of, sha256
from anycode.model.slm import NEG, SLM, SLMConfig
from anycode.model.torch_backend import COPY_COLUMNS, max_symbols
from anycode.model.vocab import MAX_CHILD_INDEX, Vocab

OPSET = 18
FORMAT_VERSION = 1


# ---------------------------------------------------------------- the graphs as modules


def _cell(gates: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's update from its pre-activations (i, f, g, o); c None is the zero state.
    The gates are split by a constant size (one Split node; chunk traces to Shape, Div and Slices)."""
    i, f, g, o = gates.split(gates.shape[-1] // 4, -1)
    c2 = torch.sigmoid(i) * torch.tanh(g)
    if c is not None:
        c2 = torch.sigmoid(f) * c + c2
    return torch.sigmoid(o) * torch.tanh(c2), c2


class _Upper(nn.Module):
    """Layers 1.. of the stacked LSTM, fed by layer 0's output."""

    def __init__(self, slm: SLM):
        super().__init__()
        self.layers = nn.ModuleList(slm.cells[1:])

    def forward(self, x, h, c):
        """h, c None: every layer starts from the zero state (W_hh . 0 and f * 0 left out)."""
        hs, cs = [], []
        for k, cell in enumerate(self.layers, start=1):
            g = x @ cell.weight_ih.t() + cell.bias_ih
            g = g + cell.bias_hh if h is None else g + h[k] @ cell.weight_hh.t() + cell.bias_hh
            x, ck = _cell(g, None if c is None else c[k])
            hs.append(x)
            cs.append(ck)
        return hs, cs


class ValueStep(nn.Module):
    """values [N, S] -> the LSTM state after reading the leaf value from the zero state."""

    def __init__(self, slm: SLM):
        super().__init__()
        cell = slm.cells[0]
        self.sub_emb = nn.Parameter(slm.sub_emb.weight.detach().clone())
        self.w_ih = nn.Parameter(cell.weight_ih.detach().clone())
        self.b_ih = nn.Parameter(cell.bias_ih.detach().clone())   # kept apart: each is a checkpoint weight
        self.b_hh = nn.Parameter(cell.bias_hh.detach().clone())
        self.upper = _Upper(slm)

    def forward(self, values):
        x = self.sub_emb[values].sum(1)                       # embed_value
        g = x @ self.w_ih.t() + self.b_ih + self.b_hh         # + W_hh . 0
        h0, c0 = _cell(g, None)
        hs, cs = self.upper(h0, None, None)
        return torch.stack([h0] + hs), torch.stack([c0] + cs)


class NodeStep(nn.Module):
    """types [N], index [N], h, c [layers, N, d] -> the state one AST node further."""

    def __init__(self, slm: SLM):
        super().__init__()
        cell = slm.cells[0]
        dt = slm.cfg.d_type
        with torch.no_grad():
            w = cell.weight_ih
            type_tab = slm.type_emb.weight @ w[:, :dt].t() + cell.bias_ih + cell.bias_hh
            index_tab = slm.index_emb.weight @ w[:, dt:].t()
        # kept fp32 in every precision: they are sums of products, not weights of the checkpoint
        self.register_buffer("type_tab", type_tab.detach().clone())
        self.register_buffer("index_tab", index_tab.detach().clone())
        self.w_hh = nn.Parameter(cell.weight_hh.detach().clone())
        self.upper = _Upper(slm)

    def forward(self, types, index, h, c):
        g = self.type_tab[types] + self.index_tab[index.clamp(0, MAX_CHILD_INDEX)] + h[0] @ self.w_hh.t()
        h0, c0 = _cell(g, c[0])
        hs, cs = self.upper(h0, h, c)
        return torch.stack([h0] + hs), torch.stack([c0] + cs)


class _Reshape(torch.autograd.Function):
    """x reshaped to `shape` as one ONNX Reshape with that constant shape, where 0 keeps the input's
    size and -1 is inferred: the tracer would compute the dynamic sizes from Shape, Gather and
    Concat nodes instead.  [0, -1, *tail]: [B, P, ...] -> [B, P, *tail]; [0, -1]: [B, ...] -> [B, n]."""

    @staticmethod
    def forward(ctx, x, shape: tuple[int, ...]):
        return x.reshape([x.shape[i] if n == 0 else n for i, n in enumerate(shape)])

    @staticmethod
    def symbolic(g, x, shape: tuple[int, ...]):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


class _ScatterAdd(torch.autograd.Function):
    """x.scatter_add(1, index, src) with src the shape of index: one ScatterElements (the tracer's
    scatter_add first slices src to the index's shape, through Shape nodes)."""

    @staticmethod
    def forward(ctx, x, index, src):
        return x.scatter_add(1, index, src)

    @staticmethod
    def symbolic(g, x, index, src):
        return g.op("ScatterElements", x, index, src, axis_i=1, reduction_s="add")


class _Attention(torch.autograd.Function):
    """Multi-head self-attention with its input projection, as ONNX Runtime's one `Attention` node
    (com.microsoft): x [B, P, D], w [D, 3D] (q, k, v side by side), b [3D], keep [B, P] int32 (1: a
    key to attend to).  The separate nodes it replaces (a reshape, a split and four transposes by head,
    two batched MatMuls, the masking and the softmax) cost as much to dispatch as to compute at
    decoding's sizes; the quantizer turns it into one QAttention (int8 projection), and
    float_graphs.py back into Attention for the GPU.  Masked keys get the kernel's -10000 (exp ~ 0),
    not -inf: a set with no key attends uniformly instead of giving NaN."""

    @staticmethod
    def forward(ctx, x, w, b, keep, heads: int):
        B, P, D = x.shape
        dh = D // heads
        q, k, v = (x @ w + b).reshape(B, P, 3, heads, dh).permute(2, 0, 3, 1, 4)     # each [B, H, P, dh]
        scores = (q @ k.transpose(-1, -2)) * dh ** -0.5 + torch.where(keep.bool(), 0.0, -10000.0)[:, None, None, :]
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, P, D)

    @staticmethod
    def symbolic(g, x, w, b, keep, heads: int):
        return g.op("com.microsoft::Attention", x, w, b, keep, num_heads_i=heads)


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention(x, x, x, key_padding_mask=~keep) in eval mode."""
    out = _Attention.apply(x, attn.in_proj_weight.t(), attn.in_proj_bias, keep, attn.num_heads)
    return out @ attn.out_proj.weight.t() + attn.out_proj.bias


def _encoder_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """nn.TransformerEncoderLayer in eval mode (post-norm, ReLU: SLM's configuration)."""
    assert not layer.norm_first and layer.activation_relu_or_gelu == 1, "SLM uses post-norm ReLU layers"
    x = layer.norm1(x + _self_attention(layer.self_attn, x, keep))
    return layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))


def _transformer(m: SLM, z: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    keep = (~pad).to(torch.int32)
    for layer in m.transformer.layers:
        z = _encoder_layer(layer, z, keep)
    return z


class Contextualize(nn.Module):
    """`SLM.contextualize`: the transformer over sets of paths alone (context_once models)."""

    def __init__(self, slm: SLM):
        super().__init__()
        self.slm = copy.deepcopy(slm)

    def forward(self, paths, mask):
        return self.slm.contextualize(paths, mask, lambda x, pad: _transformer(self.slm, x, pad))


class Score(nn.Module):
    """One decoding step for a batch of beams: `SLM.aggregate`, then both heads.

    The transformer is spelled out (`_encoder_layer`): nn.MultiheadAttention's
    traced graph fixes the batch and set sizes of the example it was traced with.
    The copy scores are one MatMul instead of ONNX Runtime's slower Einsum."""

    def __init__(self, slm: SLM, n_symbols: int):
        super().__init__()
        self.slm = copy.deepcopy(slm)
        self.n_symbols = n_symbols
        # SLM.copy_scores' einsum with W_c [K, d_lstm, d] as one MatMul with the weights laid out for it
        K, dl, d = slm.W_c.shape
        self.copy_shape = (-1, int(K), int(dl))
        self.register_buffer("w_c", slm.W_c.detach().permute(2, 0, 1).reshape(d, K * dl).clone())
        self.slm.copy_scores = self._copy_scores
        self.slm.file_copy_scores = self._file_copy_scores

    def _copy_scores(self, h: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        proj = _Reshape.apply(h @ self.w_c, self.copy_shape)                                  # [B, K, d_lstm]
        return paths @ proj.transpose(1, 2)                                                    # [B, P, K]

    def _file_copy_scores(self, h: torch.Tensor, files: torch.Tensor) -> torch.Tensor:
        return (h @ self.slm.W_f.t()) @ files.t()            # files [F, d_lstm], shared by the beams -> [B, F]

    def _value_logits(self, h, paths, copy_symbols, files, file_symbols):
        """SLM.value_logits with the same arithmetic in fewer graph nodes: the generation scores
        padded out to the symbols with one Pad (not a scatter into a filled table), flattening by
        constant-shape reshapes, the file tokens' symbols broadcast by an addition."""
        m = self.slm
        gen = h @ m.sub_emb.weight.t()                                       # [B, V]
        scores = F.pad(gen[:, 1:], (1, self.n_symbols - m.cfg.n_subtokens), value=NEG)  # padding is never a value
        copy = _Reshape.apply(self._copy_scores(h, paths), (0, -1))          # [B, P * K]
        sym = _Reshape.apply(copy_symbols, (0, -1))
        if file_symbols is not None:
            fcopy = self._file_copy_scores(h, files)
            copy = torch.cat([copy, fcopy], 1)
            sym = torch.cat([sym, torch.zeros_like(fcopy, dtype=sym.dtype) + file_symbols], 1)
        valid = sym >= 0
        copy = torch.where(valid, copy, NEG)
        mx = torch.maximum(scores.max(-1, keepdim=True).values, copy.max(-1, keepdim=True).values)
        total = _ScatterAdd.apply((scores - mx).exp(), sym.clamp(min=0), (copy - mx).exp() * valid)
        return (total.clamp_min(1e-30).log() + mx).log_softmax(-1)

    def forward(self, paths, mask, root, child_index, copy_symbols, *extra):
        """extra: z (context_once models), then files and file_symbols (file_tokens models)."""
        m = self.slm
        z = extra[0] if m.cfg.context_once else None
        files = file_symbols = None
        if m.cfg.file_tokens:
            files, file_symbols = extra[-2:]
        if z is None:
            z = _transformer(m, paths, ~mask)
        # the rest of SLM.aggregate, as written there
        C = m.C[child_index.clamp(0, MAX_CHILD_INDEX)]
        r = m.W_r(torch.relu(torch.bmm(C, root.unsqueeze(-1)).squeeze(-1)))
        att = torch.einsum("bpd,bd->bp", z, r).masked_fill(~mask, NEG).softmax(-1)
        zt = torch.einsum("bp,bpd->bd", att, z)
        h = torch.relu(m.W_g(torch.cat([zt, r], -1)))
        return m.node_logits(h), self._value_logits(h, paths, copy_symbols, files, file_symbols)


# ---------------------------------------------------------------- checkpoints


def write_untrained_checkpoint(data_dir: Path, out: Path, seed: int = 0, **overrides) -> Path:
    """A checkpoint directory like a shipped one (config.json, vocab.json, fp16 slm.pt,
    grammar.json) holding a randomly initialised SLM of the paper's shape, sized to the
    dataset's vocabulary: what tests and benchmarks use until trained weights exist."""
    data_dir, out = Path(data_dir), Path(out)
    vocab = Vocab.load(data_dir / "vocab.json")
    torch.manual_seed(seed)
    cfg = SLMConfig(n_types=len(vocab.node_types), n_subtokens=len(vocab.subtokens), **overrides)
    model = SLM(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    vocab.save(out / "vocab.json")
    if (data_dir / "grammar.json").exists():
        shutil.copy(data_dir / "grammar.json", out / "grammar.json")
    from anycode.model.dataset import data_language
    (out / "config.json").write_text(json.dumps(
        {"language": data_language(data_dir).id, "model": model.config_dict(),
         "features": {"max_paths": 200, "max_length": 24}, "untrained": True}, indent=1))
    torch.save({k: v.half() for k, v in model.state_dict().items()}, out / "slm.pt")
    return out


# ---------------------------------------------------------------- export


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _store_fp16(path: Path, min_elements: int = 1024, keep: tuple[str, ...] = ("type_tab", "index_tab")) -> None:
    """Float initializers -> fp16 followed by a Cast back to fp32 (folded by ORT at load)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    casts = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or any(k in init.name for k in keep):
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements:
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + "__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=TensorProto.FLOAT,
                                      name=name + "__cast"))
    for node in reversed(casts):
        g.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _quantize_int8(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = path.with_suffix(".fp32.onnx")
    path.rename(tmp)
    quantize_dynamic(str(tmp), str(path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm", "Attention"])
    tmp.unlink()


def _export_graphs(model: SLM, out: Path, n_sym: int) -> None:
    cfg = model.cfg
    L, d = cfg.lstm_layers, cfg.d_lstm
    N, B, P = 3, 2, 4
    h = torch.zeros(L, N, d)
    _export(ValueStep(model), (torch.randint(0, cfg.n_subtokens, (N, MAX_VALUE_SUBTOKENS)),),
            out / "lstm_value.onnx", ["values"], ["h", "c"],
            {"values": {0: "n"}, "h": {1: "n"}, "c": {1: "n"}})
    _export(NodeStep(model), (torch.randint(3, cfg.n_types, (N,)), torch.randint(0, 4, (N,)), h, h.clone()),
            out / "lstm_node.onnx", ["types", "index", "h", "c"], ["h_out", "c_out"],
            {"types": {0: "n"}, "index": {0: "n"}, "h": {1: "n"}, "c": {1: "n"},
             "h_out": {1: "n"}, "c_out": {1: "n"}})
    mask = torch.ones(B, P, dtype=torch.bool)
    mask[1, 3] = False
    args = (torch.randn(B, P, d), mask, torch.randn(B, d), torch.tensor([0, 1]),
            torch.randint(-1, 50, (B, P, COPY_COLUMNS)))
    names = ["paths", "mask", "root", "child_index", "copy_symbols"]
    axes = {"paths": {0: "b", 1: "p"}, "mask": {0: "b", 1: "p"}, "root": {0: "b"},
            "child_index": {0: "b"}, "copy_symbols": {0: "b", 1: "p"}, "node_logp": {0: "b"}, "value_logp": {0: "b"}}
    if cfg.context_once:
        args, names, axes = args + (torch.randn(B, P, d),), names + ["z"], {**axes, "z": {0: "b", 1: "p"}}
        _export(Contextualize(model), (torch.randn(B, P, d), mask), out / "contextualize.onnx", ["paths", "mask"],
                ["z"], {"paths": {0: "b", 1: "p"}, "mask": {0: "b", 1: "p"}, "z": {0: "b", 1: "p"}})
    if cfg.file_tokens:
        args += (torch.randn(3, d), torch.tensor([cfg.n_subtokens + 1, -1, 5]))
        names += ["files", "file_symbols"]
        axes = {**axes, "files": {0: "f"}, "file_symbols": {0: "f"}}
    _export(Score(model, n_sym), args, out / "score.onnx", names, ["node_logp", "value_logp"], axes)


def file_entries(out: Path, files: list[str]) -> dict:
    """The manifest's "files": each file's size and sha256, checked at load (runtime.load_manifest)."""
    return {f: {"bytes": (out / f).stat().st_size, "sha256": sha256(out / f)} for f in files}


def export(model: SLM, vocab: Vocab, conf: dict, out: Path, precision: str = "fp16",
           grammar_json: Path | None = None) -> dict:
    """Write the graphs and the files the runtime reads into `out`; returns the manifest."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, not {precision!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    cfg = model.cfg
    feats = conf.get("features", {})
    max_paths, max_length = int(feats.get("max_paths", 200)), int(feats.get("max_length", 24))
    n_sym = max_symbols(cfg, max_paths)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)      # the fused encoder-layer kernel has no ONNX form
    try:
        with torch.no_grad():
            _export_graphs(model, out, n_sym)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    for name in graphs_of(cfg.context_once):
        path = out / f"{name}.onnx"
        if precision == "int8":
            _quantize_int8(path)
        elif precision != "fp32":
            _store_fp16(path)
    vocab.save(out / "vocab.json")
    (out / "config.json").write_text(json.dumps(conf, indent=1))
    files = [f"{g}.onnx" for g in graphs_of(cfg.context_once)] + ["vocab.json", "config.json"]
    if grammar_json is not None and Path(grammar_json).exists():
        if Path(grammar_json).resolve() != (out / "grammar.json").resolve():
            shutil.copy(grammar_json, out / "grammar.json")
        files.append("grammar.json")
    manifest = {
        "format": FORMAT_VERSION, "language": grammars.of_config(conf).id, "precision": precision, "opset": OPSET,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": model.config_dict(), "max_paths": max_paths, "max_length": max_length,
        "max_value_subtokens": MAX_VALUE_SUBTOKENS, "copy_columns": COPY_COLUMNS, "n_symbols": n_sym,
        "untrained": bool(conf.get("untrained", False)),
        "files": file_entries(out, files),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


# ---------------------------------------------------------------- CLI


def add_parser(ap: argparse.ArgumentParser) -> None:
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="run directory of `anycode train`, or a shipped checkpoint")
    src.add_argument("--untrained", type=Path, metavar="DATASET_DIR",
                     help="random weights of the paper's shape, with this dataset's vocab.json and grammar.json")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "shipped")
    ap.add_argument("--precision", choices=["fp16", "fp32", "int8"], default="int8")
    ap.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="same as --precision fp16")
    ap.add_argument("--grammar", type=Path, help="grammar.json (default: the checkpoint's or dataset's)")
    ap.add_argument("--seed", type=int, default=0, help="with --untrained")


def run(args) -> int:
    t0 = time.perf_counter()
    src = args.checkpoint
    if args.untrained is not None:
        src = write_untrained_checkpoint(args.untrained, Path(args.out) / "untrained-checkpoint", args.seed)
    if not (Path(src) / "config.json").exists():
        print(f"error: {src} has no config.json: not a checkpoint directory", file=sys.stderr)
        return 2
    model, vocab, conf = load_model(src)
    grammar_json = args.grammar or Path(src) / "grammar.json"
    if not Path(grammar_json).exists():
        print(f"warning: no grammar.json beside {src}: decoding will not be grammar-constrained", file=sys.stderr)
    manifest = export(model, vocab, conf, args.out, args.precision, grammar_json)
    if args.untrained is not None:
        shutil.rmtree(src)
    total = sum(f["bytes"] for f in manifest["files"].values())
    for name, f in manifest["files"].items():
        print(f"  {name:18s} {f['bytes'] / 1e6:7.2f} MB")
    print(f"exported {model.num_parameters() / 1e6:.1f}M parameters ({args.precision}) to {args.out}: "
          f"{total / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return 0
