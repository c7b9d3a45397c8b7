"""Export trained code-search encoders to ONNX, for a torch-free runtime (model/search_runtime.py).

    python -m anycode.model.search_export WEIGHTS PACKED OUT

WEIGHTS is a `search_train` weights file (a run's best.pt, or search_best.pt from a device call), PACKED the `search-data pack`
folder it was trained from (its vocabularies).  OUT gets `search_query.onnx` (query ids [B, Q] ->
vectors [B, W]), `search_code.onnx` (code ids [B, C] and path-contexts [B, K, 3] -> vectors [B, W]),
both with their weights stored in half precision, `vocab.json.xz` and `config.json` (the fusion,
the width, the language, the limits and the dev and test figures the weights were chosen by).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn

from anycode.model.export import OPSET, _store_fp16
from anycode.model.search_train import load_model


class QueryGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, query):
        return self.model.encode_query(query)


class CodeGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, code, ctx):
        return self.model.encode_code(code, ctx)


def export(weights: Path, packed: Path, out: Path) -> Path:
    """The ONNX encoders of `weights` with the vocabularies of `packed`, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(weights, packed=packed)
    for enc in (model.query, model.semantic):
        if enc is not None:
            enc.for_export = True
    meta = json.loads((packed / "meta.json").read_text())
    lim = meta["limits"]
    q = torch.ones(2, lim["query"], dtype=torch.long)
    code = torch.ones(2, lim["code"], dtype=torch.long)
    ctx = torch.ones(2, lim["contexts"], 3, dtype=torch.long)
    graphs = [(QueryGraph(model), (q,), "search_query.onnx", ["query"]),
              (CodeGraph(model), (code, ctx), "search_code.onnx", ["code", "ctx"])]
    for module, args, name, inputs in graphs:
        torch.onnx.export(module, args, str(out / name), input_names=inputs, output_names=["vector"],
                          dynamic_axes={**{i: {0: "batch", 1: "length"} for i in inputs}, "vector": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        _store_fp16(out / name)
    shutil.copy(packed / "vocab.json.xz", out / "vocab.json.xz")
    info = torch.load(weights, map_location="cpu", weights_only=True)["info"]
    width = model.query_out.out_features
    (out / "config.json").write_text(json.dumps({
        "kind": "code-search encoders", "language": meta.get("language"), "fusion": model.cfg.fusion,
        "width": width, "limits": lim, "code_cap": model.cfg.max_code, "trained": info}, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path)
    ap.add_argument("packed", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args(argv)
    out = export(a.weights, a.packed, a.out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"{out}: {size / 2**20:.1f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
