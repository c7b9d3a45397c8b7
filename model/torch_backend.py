"""The torch model as a `beam.Backend`: the search the server runs, on weights in torch.

`TorchBackend` has `runtime.OrtBackend`'s interface (value_step, node_step, score,
contextualize; numpy in and out) over the SLM's own methods, on the model's device.
`torch_decoder` puts it under `beam.Decoder`, so that evaluation (`anycode eval`),
training's dev accuracy and diagnosis run the shipped search (its grammar masks,
root types, step bounds and soft close) on a checkpoint, and the parity tests
(tests/test_onnx_parity.py) hold the exported graphs to it.
"""
from __future__ import annotations

import numpy as np
import torch

from anycode.model.beam import Decoder
from anycode.model.features import MAX_COPY_POSITIONS
from anycode.model.slm import SLM, SLMConfig

COPY_COLUMNS = 1 + MAX_COPY_POSITIONS


def max_symbols(cfg: SLMConfig, max_paths: int) -> int:
    """Every symbol a request can have: the vocabulary, at most K per context leaf, the file tokens."""
    return cfg.n_subtokens + max_paths * COPY_COLUMNS + cfg.file_tokens


class TorchBackend:
    """`runtime.OrtBackend`'s interface over the torch model itself (SLM's own methods),
    on the model's device (numpy in and out)."""

    name = "torch"

    def __init__(self, model: SLM, n_symbols: int, threads: int = 0):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.n_symbols = n_symbols
        if threads:
            torch.set_num_threads(threads)

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    @staticmethod
    def _np(*ts: torch.Tensor):
        return tuple(t.float().cpu().numpy() for t in ts)

    @torch.no_grad()
    def value_step(self, values: np.ndarray):
        m = self.model
        return self._np(*m.lstm_step(m.embed_value(self._t(values)), *m.initial_state(len(values), self.device)))

    @torch.no_grad()
    def node_step(self, types: np.ndarray, index: np.ndarray, h: np.ndarray, c: np.ndarray):
        m = self.model
        return self._np(*m.lstm_step(m.embed_node(self._t(types), self._t(index)), self._t(h), self._t(c)))

    @torch.no_grad()
    def score(self, paths, mask, root, child_index, copy_symbols, z=None, files=None, file_symbols=None):
        m = self.model
        p = self._t(paths)
        h = m.aggregate(p, self._t(mask), self._t(root), self._t(child_index), None if z is None else self._t(z))
        if files is not None:
            B = p.shape[0]
            files = self._t(files).unsqueeze(0).expand(B, -1, -1)
            file_symbols = self._t(file_symbols).unsqueeze(0).expand(B, -1)
        return self._np(m.node_logits(h), m.value_logits(h, p, self._t(copy_symbols), self.n_symbols, files,
                                                        file_symbols))

    @torch.no_grad()
    def contextualize(self, paths, mask):
        return self._np(self.model.contextualize(self._t(paths), self._t(mask)))[0]


def torch_decoder(model: SLM, vocab, table=None, max_paths: int = 200, max_length: int = 24, *,
                  lang) -> Decoder:
    """`beam.Decoder` over `model` (in eval mode, on its device), configured as the model was trained;
    `lang`: the model's language (anycode.grammars)."""
    cfg = model.cfg
    backend = TorchBackend(model, max_symbols(cfg, max_paths))
    return Decoder(backend, vocab, table, lang=lang, max_paths=max_paths, max_length=max_length,
                   context_once=cfg.context_once, file_tokens=cfg.file_tokens)
