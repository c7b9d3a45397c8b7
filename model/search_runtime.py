"""The exported code-search encoders (model/search_export.py) run with ONNX Runtime: no torch.

    enc = SearchEncoders(model_dir)
    q = enc.queries(["read a file"])                        # [1, W]
    c = enc.functions([search_data.source_features(code, enc.lang)])   # [N, W]
    scores = q @ c.T                                        # inner products rank functions

Functions and queries are featurized as training featurized them (model/search_data.py,
model/search_pack.py), so the vectors are the ones the weights were chosen for.
"""
from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.model import search_pack
from anycode.model.search_data import Features, words


class SearchEncoders:
    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.config = json.loads((model_dir / "config.json").read_text())
        self.lang = grammars.get(self.config.get("language") or grammars.DEFAULT)
        vocab = json.loads(lzma.decompress((model_dir / "vocab.json.xz").read_bytes()))
        self.encoder = search_pack.Encoder(vocab)
        self.vocab_sizes = {k: len(v) for k, v in vocab.items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.query_session = ort.InferenceSession(str(model_dir / "search_query.onnx"), opts,
                                                  providers=["CPUExecutionProvider"])
        self.code_session = ort.InferenceSession(str(model_dir / "search_code.onnx"), opts,
                                                 providers=["CPUExecutionProvider"])
        self.width = int(self.config["width"])

    def _arrays(self, rows: list) -> dict[str, np.ndarray]:
        return {k: v.astype(np.int64) for k, v in search_pack.to_arrays(rows, self.vocab_sizes).items()}

    def queries(self, texts: list[str], batch: int = 256) -> np.ndarray:
        """Vectors [N, W] of natural-language queries."""
        out = [np.zeros((0, self.width), np.float32)]
        for i in range(0, len(texts), batch):
            rows = [self.encoder.row(words(t), [], []) for t in texts[i: i + batch]]
            out.append(self.query_session.run(None, {"query": self._arrays(rows)["query"]})[0])
        return np.concatenate(out)

    def functions(self, features: list[Features], batch: int = 256) -> np.ndarray:
        """Vectors [N, W] of functions, from their features (`search_data.source_features`)."""
        out = [np.zeros((0, self.width), np.float32)]
        for i in range(0, len(features), batch):
            rows = [self.encoder.row([], f.code, f.contexts) for f in features[i: i + batch]]
            a = self._arrays(rows)
            out.append(self.code_session.run(None, {"code": a["code"], "ctx": a["ctx"]})[0])
        return np.concatenate(out)
