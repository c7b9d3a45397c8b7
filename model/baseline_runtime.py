"""Completions from a baseline of issue 21 (the seq2seq model with copy, the FIM token model), for the
server: `anycode serve --model s2s|fim --model-path DIR`, DIR written by `anycode s2s|fim export`
(model/baseline_export.py).  ONNX Runtime, never torch.

It answers as runtime.Completer does, through the same protocol (model/completer.py) and the same
LSP handlers: the hole is the SLM's (holes.find_typed_hole: the expression being typed, the typed
text taken out of the buffer), read as the evaluation reads a hole in its file (token_search's
`FimHole`: its buffer with the placeholder, its context node as the function), so that the model
sees what `anycode s2s|fim eval` shows it; the search is the evaluation's own (s2s_search /
fim_search over token_search's beam), with its "grammar" list: only texts that parse in the hole
(`Hole.verify`) and, where something is typed, that agree with it (prefix.py's `Prefix.adds`), then
written as the user typed them.  The model writes the whole expression with the typed text taken out:
a typed start filters its answers, it does not steer the search.  Where the hole has a fallback (the
operand after `f(a, `) and the expression answers nothing, the fallback is searched, as the SLM does.

The time budget and cancellation are checked before the search and between its steps: past
`deadline` the search ends with what is finished (nothing, when it has not started), `cancelled()`
raises runtime.Cancelled.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from anycode import grammars
from anycode.model import holes
from anycode.model import fim_search, s2s_search
from anycode.model.completer import Candidate
from anycode.model.prefix import Prefix
from anycode.model.runtime import Cancelled, ModelError, check_request, load_manifest, ort_providers
from anycode.model.token_search import FimHole, Stopped

KINDS = ("s2s", "fim")


def _hint(kind: str) -> str:
    return f"run `anycode {kind} export --model RUN --out DIR` and serve DIR (`anycode serve --model {kind} " \
           f"--model-path DIR`, or the settings anycode.model and anycode.modelPath)"


class _Sessions:
    """The directory's graphs in ONNX Runtime sessions, on `device` (auto, cpu, cuda)."""

    def __init__(self, model_dir: Path, names, device: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        providers = ort_providers(ort, device)
        self.sessions = {}
        for name in names:
            try:
                self.sessions[name] = ort.InferenceSession(str(model_dir / name), so, providers=providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise ModelError(f"cannot load {model_dir / name}: {e}") from e
        used = next(iter(self.sessions.values())).get_providers()[0]
        self.device = "cuda" if used == "CUDAExecutionProvider" else "cpu"
        if device == "cuda" and self.device != "cuda":
            raise ModelError(f"device 'cuda' asked for, but ONNX Runtime fell back to {used}")

    def run(self, name: str, feed: dict) -> list[np.ndarray]:
        return self.sessions[name].run(None, feed)


class S2SGraphs:
    """The seq2seq model's encoder and decoder graphs (s2s_search.search over them)."""

    def __init__(self, model_dir: Path, manifest: dict, device: str, threads: int):
        self.cfg = manifest["model"]
        self.vocab = json.loads((model_dir / "vocab.json").read_text())
        self.words = s2s_search.vocab_words(self.vocab)
        self.ort = _Sessions(model_dir, ("s2s_encoder.onnx", "s2s_decoder.onnx"), device, threads)

    def search(self, hole: FimHole, beam: int, check, stop) -> dict:
        cfg = self.cfg
        built = s2s_search.hole_source(hole, self.words, cfg["vocab"], cfg["max_src"], cfg["max_tgt"])
        if built is None:
            return {"plain": [], "grammar": []}
        src = built[0][None]
        memory = self.ort.run("s2s_encoder.onnx", {"src": src})[0]

        def decode_last(prefix: np.ndarray) -> np.ndarray:
            return self.ort.run("s2s_decoder.onnx", {"memory": memory, "src": src, "prefix": prefix})[0]

        return s2s_search.search(decode_last, built[1], self.vocab, hole.tree.lang, beam, cfg["max_tgt"], check, stop)


class FimGraphs:
    """The FIM model's step graph and its tokenizer (fim_search.search over them)."""

    def __init__(self, model_dir: Path, manifest: dict, device: str, threads: int):
        from anycode.model import fim_tokenizer
        try:
            self.tok = fim_tokenizer.load(model_dir / "tokenizer.json")
        except ImportError as e:
            raise ModelError(f"the fim model needs the `tokenizers` package: pip install \"anycode[fim]\" ({e})") from e
        self.cfg = manifest["model"]
        self.banned = fim_tokenizer.middle_banned(self.tok, self.cfg["vocab"])
        self.ort = _Sessions(model_dir, ("fim_step.onnx",), device, threads)

    def search(self, hole: FimHole, beam: int, check, stop) -> dict:
        c = self.cfg
        cache = {"past": np.zeros((c["n_layer"], 2, 1, c["n_head"], 0, c["d"] // c["n_head"]), np.float32)}

        def step(tokens: np.ndarray, parents: np.ndarray | None) -> np.ndarray:
            past = cache["past"] if parents is None else cache["past"][:, :, parents]
            logp, cache["past"] = self.ort.run("fim_step.onnx", {"tokens": tokens, "past": past})
            return logp

        return fim_search.search(step, self.tok, hole, beam, self.banned, c["block"], check, c.get("spm", False),
                                 stop=stop)


GRAPHS = {"s2s": S2SGraphs, "fim": FimGraphs}


def file_hole(hole: holes.Hole, lang) -> FimHole:
    """The server's hole as the evaluation reads one in its file: its buffer with the placeholder in
    the hole, the context (the enclosing function) as the function, its comments blanked."""
    (a, b), (fa, fb) = hole.hole_range, hole.context_range
    comments = tuple(lang.comments(hole.ph_tree.root_node, fa, fb))
    return FimHole(hole.tree, hole.h, hole.ph_source, a, b, fa, fb, comments)


class BaselineCompleter:
    """A baseline's graphs behind model/completer.py's protocol."""

    def __init__(self, kind: str, model_dir: str | Path | None, device: str = "auto", threads: int = 0):
        if kind not in KINDS:
            raise ModelError(f"no baseline {kind!r}: the baselines are {', '.join(KINDS)}")
        if not model_dir:
            raise ModelError(f"the {kind} model has no directory; {_hint(kind)}")
        self.model_dir = Path(model_dir)
        self.manifest = load_manifest(self.model_dir, hint=_hint(kind))
        got = self.manifest.get("kind", "slm")
        if got != kind:
            raise ModelError(f"{self.model_dir} holds the {got} model, not the {kind} model: set anycode.model "
                             f"to {got} (`--model {got}`), or {_hint(kind)}")
        try:
            self.lang = grammars.get(self.manifest["language"])
        except KeyError as e:
            raise ModelError(f"{self.model_dir}: unknown language {e}; {_hint(kind)}") from e
        self.kind = kind
        self.graphs = GRAPHS[kind](self.model_dir, self.manifest, device, threads)
        self.device = self.graphs.ort.device
        self.note = ""
        self.parser = self.lang.new_parser()
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "no_hole": 0, "completions": 0, "cancelled": 0, "deadline": 0, "fallback": 0}

    def close_document(self, uri: str) -> None:
        """Nothing is kept per document."""

    def counters(self) -> dict:
        return {"scoreMemo": None, "leafCache": None, "typedSearches": {"fallback": self.stats["fallback"]}}

    def complete(self, source: bytes, cursor: int, *, uri: str = "", version: int = 0, beam_size: int = 5,
                 max_items: int = 5, deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                 prior: tuple[bytes, object] | None = None) -> list[Candidate]:
        """Ranked completions of the expression at byte offset `cursor` of `source` (runtime.Completer's
        contract)."""
        check_request(source, cursor, beam_size, max_items)
        with self._lock:
            self.stats["requests"] += 1

            def stop() -> None:
                if cancelled is not None and cancelled():
                    self.stats["cancelled"] += 1
                    raise Cancelled()
                if deadline is not None and time.monotonic() >= deadline:
                    self.stats["deadline"] += 1
                    raise Stopped()

            try:
                stop()
            except Stopped:
                return []
            hole = holes.find_typed_hole(bytes(source), cursor, lang=self.lang, parser=self.parser, prev=prior)
            if hole is None:
                self.stats["no_hole"] += 1
                return []
            out = self._answers(hole, beam_size, max_items, stop)
            if not out and hole.fallback is not None:
                self.stats["fallback"] += 1
                out = self._answers(hole.fallback, beam_size, max_items, stop)
            self.stats["completions"] += bool(out)
            return out

    def _answers(self, hole: holes.Hole, beam_size: int, max_items: int, stop) -> list[Candidate]:
        """The grammar list of one search at `hole`, as candidates written as the user typed them."""
        prefix = Prefix(hole.typed, hole.typed_type, lang=self.lang)

        def check(text: str) -> bool:
            return (not prefix or prefix.adds(text)) and hole.verify(text, None, self.parser)

        found = self.graphs.search(file_hole(hole, self.lang), beam_size, check, stop)["grammar"]
        return [Candidate(hole.lead + prefix.respell(text) + hole.closers, logp, hole.start, hole.end)
                for text, logp in found[:max_items]]
