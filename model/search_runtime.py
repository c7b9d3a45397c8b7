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


SHIPPED = Path(__file__).parent / "shipped" / "search"


def ships() -> bool:
    """Whether encoders ship with the package (without loading them)."""
    return (SHIPPED / "config.json").exists()


def shipped(threads: int = 1) -> "SearchEncoders | None":
    """The encoders that ship with the package, or None where they do not (ranking falls back to BM25)."""
    return SearchEncoders(SHIPPED, threads) if ships() else None


class SearchEncoders:
    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.model_dir = model_dir
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
        self.code_cap = int(self.config.get("code_cap") or self.config["limits"]["code"])
        # BM25's weight beside the vectors (model/search_hybrid.py chose it on dev); 0: the vectors alone
        self.bm25_weight = float(self.config.get("bm25_weight") or 0.0)

    def _arrays(self, rows: list) -> dict[str, np.ndarray]:
        return {k: v.astype(np.int64) for k, v in search_pack.to_arrays(rows, self.vocab_sizes).items()}

    def queries(self, texts: list[str], batch: int = 256) -> np.ndarray:
        """Vectors [N, W] of natural-language queries."""
        rows = [self.encoder.row(words(t), [], []) for t in texts]
        return self._encode(rows, lambda r: len(r[0]), batch, self._run_queries)

    def functions(self, features: list[Features], batch: int = 256) -> np.ndarray:
        """Vectors [N, W] of functions, from their features (`search_data.source_features`)."""
        rows = [self.encoder.row([], f.code[: self.code_cap], f.contexts) for f in features]
        return self._encode(rows, lambda r: len(r[1]), batch, self._run_functions)

    def _run_queries(self, a: dict[str, np.ndarray]) -> np.ndarray:
        return self.query_session.run(None, {"query": _trim(a["query"])})[0]

    def _run_functions(self, a: dict[str, np.ndarray]) -> np.ndarray:
        return self.code_session.run(None, {"code": _trim(a["code"]), "ctx": _trim(a["ctx"], a["ctx"][..., 1])})[0]

    def _encode(self, rows: list, length, batch: int, run) -> np.ndarray:
        """Rows encoded in batches of similar lengths (sorted), each cut to its longest row: padding
        changes no vector (the encoders mask it), only the time spent on it."""
        out = np.zeros((len(rows), self.width), np.float32)
        order = sorted(range(len(rows)), key=lambda i: length(rows[i]))
        for i in range(0, len(order), batch):
            idx = order[i: i + batch]
            out[idx] = run(self._arrays([rows[j] for j in idx]))
        return out


def _trim(a: np.ndarray, used: np.ndarray | None = None) -> np.ndarray:
    """`a` [B, T, ...] without the padding columns at the end that no row uses (at least one kept)."""
    used = a if used is None else used
    nonzero = (used != 0).reshape(len(used), used.shape[1], -1).any(-1).any(0)
    return a[:, : max(1, int(nonzero.nonzero()[0].max()) + 1 if nonzero.any() else 1)]
