"""Completions for the editor: holes (model/holes.py), beam search (model/beam.py), ONNX Runtime.

    c = Completer()                                  # model/shipped, CUDA when there is one
    c.complete(source_bytes, cursor_byte, uri=..., version=...) -> [Candidate(text, logprob, start, end)]

Hypotheses that only closed because the search steered them closed (`soft_steps`) are not
offered: an empty answer beats a degenerate chain in the editor.

`start`..`end` is the byte range of `source` a candidate replaces: the part of
the expression the user already typed (`params.it|` -> `params.items()`), or
the empty range at the cursor.  Every candidate was printed from the generated
tree, put in the buffer and re-parsed there by tree-sitter; those that do not
parse back as the same tree are dropped.

Per document (`uri`), the Completer keeps:
  * the last buffer-with-placeholder and its tree: the next request parses
    incrementally from it (a new version only changes where it was edited);
  * the last few contexts encoded up to the hole's parent (beam.ContextCache),
    keyed by content: a request at the same hole whose context did not change
    (typing inside the expression, asking again) encodes nothing.
Across documents, the upward states of context leaves (beam.LeafCache), keyed by
content.  Keys are content, so nothing is ever stale; `close_document(uri)`
drops a document's entries, and both caches are LRU-bounded.
`stats` counts requests and cache hits.

This module never imports torch.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from anycode import grammars
from anycode.model import holes
from anycode.model.beam import ContextCache, Decoder, LeafCache, ScoreMemo, Stopped
from anycode.model.completer import Candidate
from anycode.model.cuda_graphs import GraphRunner
from anycode.model.float_graphs import cached as float_graphs_cached
from anycode.model.prefix import Prefix
from anycode.model.vocab import Vocab

SHIPPED = Path(__file__).resolve().parent / "shipped"
GRAPHS = ("lstm_value", "lstm_node", "score")


def graphs_of(context_once: bool) -> tuple[str, ...]:
    """The graphs model/export.py writes and the runtime loads; context_once models have one more."""
    return GRAPHS + ("contextualize",) if context_once else GRAPHS
MAX_DOCUMENTS = 32
# a typed start whose search found nothing is searched again this many times as wide
WIDEN = 4


class ModelError(RuntimeError):
    """The model directory is missing, incomplete or corrupt, or the device cannot be used."""


class Cancelled(Exception):
    """The request's `cancelled()` callback said so."""


# ---------------------------------------------------------------- ONNX Runtime


def ort_providers(ort, device: str) -> list[str]:
    """ONNX Runtime's providers for `device` (auto, cpu, cuda): CUDA first where there is one and the
    device allows it; ModelError where cuda is asked for and this onnxruntime has none."""
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception:  # noqa: BLE001 - a system CUDA install needs no preloading
                pass
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ModelError(f"device 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider "
                         f"(it has {available}); install onnxruntime-gpu")
    return ["CPUExecutionProvider"]


class OrtBackend:
    """The three decoding graphs in ONNX Runtime sessions (beam.Backend)."""

    def __init__(self, model_dir: Path, device: str = "auto", threads: int = 0, graphs: tuple[str, ...] = GRAPHS,
                 float_graphs: bool | None = None, cuda_graphs: bool = True):
        """`float_graphs`: run int8 graphs as float graphs (model/float_graphs.py); None is automatic:
        on the CUDA provider, which has no kernel for their activation quantizers, when the `onnx`
        package is there (`note` says when it is not).  `cuda_graphs`: on the CUDA provider, run
        float graphs as CUDA graphs with their inputs and outputs bound to the device
        (model/cuda_graphs.py)."""
        import onnxruntime as ort

        asked_float_graphs = float_graphs
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
        providers = ort_providers(ort, device)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        on_cpu = providers[0] == "CPUExecutionProvider"
        # automatic on the CPU: the LSTM graphs on one thread (calls of a fraction of a ms, where a
        # pool's hand-offs and spinning cost more than a second core gives), the score graph on two
        # where there are two cores: 0.90x per completion (docs/bench.md, "Forced steps, and the score
        # graph on two threads"); every graph on two is 1.7x slower, their pools spin against each
        # other.  The CUDA provider keeps ONNX Runtime's own default (all cores)
        if threads or on_cpu:
            so.intra_op_num_threads = threads or 1
        self.threads = so.intra_op_num_threads or "all cores"
        score_so = so
        if on_cpu and not threads and (os.cpu_count() or 1) >= 2:
            score_so = ort.SessionOptions()
            score_so.graph_optimization_level, score_so.log_severity_level = so.graph_optimization_level, 3
            score_so.inter_op_num_threads, score_so.intra_op_num_threads = 1, 2
            self.threads = "1, 2 for the score graph"
        # on the CPU the fused SkipLayerNormalization kernel is slower than Add + LayerNormalization
        # at decoding's sizes (about 7x a call; docs/bench.md, "Threads, and int8 LSTM graphs")
        disabled = ["SkipLayerNormFusion"] if on_cpu else None
        self.note = ""
        manifest = _read_manifest(model_dir)
        int8 = manifest.get("precision") == "int8"
        if float_graphs is None:
            float_graphs = not on_cpu and int8
            if float_graphs and importlib.util.find_spec("onnx") is None:
                float_graphs = False
                self.note = ("the int8 graphs run as they are on the GPU, partly on the CPU: "
                             "`pip install onnx` (or anycode[gpu]) lets them run as float graphs there")
        self.float_graphs = bool(float_graphs)
        # int8 graphs keep quantizers on the CPU: no CUDA graph can hold them
        use_cuda_graphs = cuda_graphs and not on_cpu and (self.float_graphs or not int8)

        def session(g, source):
            return ort.InferenceSession(source, score_so if g == "score" else so, providers=providers,
                                        disabled_optimizers=disabled)

        self.sessions, self.runners = {}, {}
        for g in graphs:
            path = Path(model_dir) / f"{g}.onnx"
            try:
                if self.float_graphs:
                    sha = manifest.get("files", {}).get(path.name, {}).get("sha256") or sha256(path)
                    source = float_graphs_cached(path, sha)
                    try:
                        self.sessions[g] = session(g, source)
                    except Exception:  # noqa: BLE001 - a damaged cached float graph: convert again
                        if not isinstance(source, str):
                            raise
                        Path(source).unlink(missing_ok=True)
                        source = float_graphs_cached(path, sha)
                        self.sessions[g] = session(g, source)
                else:
                    source = str(path)
                    self.sessions[g] = session(g, source)
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise ModelError(f"cannot load {path}: {e}") from e
            if use_cuda_graphs:
                try:
                    self.runners[g] = GraphRunner(ort, g, source, so, self.sessions[g])
                    self.runners[g].warm()
                except Exception as e:  # noqa: BLE001 - the plain session serves
                    self.runners.pop(g, None)
                    self.note = f"{g} runs without CUDA graphs: {e}"
        used = self.sessions["score"].get_providers()
        self.provider = used[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            raise ModelError(f"device 'cuda' asked for, but ONNX Runtime fell back to {used}")
        if not on_cpu and self.provider != "CUDAExecutionProvider":
            # a CUDA provider that did not start (onnxruntime-gpu, no usable GPU): the sessions as
            # made for the CPU instead (int8 graphs as shipped, the CPU's threads)
            self.__init__(model_dir, "cpu", threads, graphs, asked_float_graphs, cuda_graphs)
            self.note = "ONNX Runtime's CUDA provider did not start (no usable GPU): the model runs on the CPU"
            return
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.name = f"onnxruntime-{self.device}" + (" (float graphs)" if self.float_graphs else "") + \
            (" (CUDA graphs)" if self.runners else "")
        self.calls = {g: 0 for g in graphs}
        self.seconds = {g: 0.0 for g in graphs}

    def _run(self, g: str, feed: dict):
        t = time.perf_counter()
        runner = self.runners.get(g)
        if runner is not None:
            out = runner.run(feed)
        else:
            out = self.sessions[g].run(None, feed)
        self.seconds[g] += time.perf_counter() - t
        self.calls[g] += 1
        return out

    def value_step(self, values):
        return self._run("lstm_value", {"values": np.ascontiguousarray(values, np.int64)})

    def node_step(self, types, index, h, c):
        return self._run("lstm_node", {"types": np.ascontiguousarray(types, np.int64),
                                       "index": np.ascontiguousarray(index, np.int64),
                                       "h": np.ascontiguousarray(h, np.float32),
                                       "c": np.ascontiguousarray(c, np.float32)})

    def score(self, paths, mask, root, child_index, copy_symbols, z=None, files=None, file_symbols=None):
        feed = {"paths": paths, "mask": mask, "root": root, "child_index": child_index, "copy_symbols": copy_symbols}
        if z is not None:
            feed["z"] = z
        if files is not None:
            feed["files"], feed["file_symbols"] = files, file_symbols
        return self._run("score", feed)

    def contextualize(self, paths, mask):
        return self._run("contextualize", {"paths": paths, "mask": mask})[0]


# ---------------------------------------------------------------- the model directory


def _read_manifest(model_dir: Path) -> dict:
    """manifest.json as it is (load_manifest checks it), {} when there is none."""
    try:
        return json.loads((Path(model_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(model_dir: Path, verify: bool = True,
                  hint: str = "run `anycode export --checkpoint RUN_DIR --out DIR` to make one") -> dict:
    """manifest.json of a model directory, every file it names checked (size; sha256 with `verify`);
    ModelError, ending with `hint` (how to make one), where something is wrong."""
    model_dir = Path(model_dir)
    mf = model_dir / "manifest.json"
    if not mf.exists():
        raise ModelError(f"no model in {model_dir} (no manifest.json); {hint}")
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as e:
        raise ModelError(f"{mf} is corrupt ({e}); {hint}") from e
    for name, meta in files.items():
        path = model_dir / name
        if not path.exists():
            raise ModelError(f"model file {path} is missing; {hint}")
        if path.stat().st_size != meta["bytes"]:
            raise ModelError(f"model file {path} has {path.stat().st_size} bytes, the manifest says "
                             f"{meta['bytes']}: it is corrupt or from another export; {hint}")
        if verify and sha256(path) != meta["sha256"]:
            raise ModelError(f"model file {path} does not match its sha256 in the manifest: it is corrupt; {hint}")
    return manifest


# ---------------------------------------------------------------- the completer


def check_request(source, cursor: int, beam_size: int, max_items: int) -> None:
    """A completion request's arguments, as every completer's `complete` takes them: TypeError or
    ValueError saying which is wrong."""
    if not isinstance(source, (bytes, bytearray)):
        raise TypeError(f"source must be bytes, not {type(source).__name__}")
    if not 0 <= cursor <= len(source):
        raise ValueError(f"cursor {cursor} is outside the buffer of {len(source)} bytes")
    if beam_size < 1 or max_items < 1:
        raise ValueError("beam_size and max_items must be at least 1")


@dataclass
class _Document:
    prev: tuple[bytes, object] | None = None      # (buffer with placeholder, its tree)
    contexts: ContextCache = field(default_factory=ContextCache)
    identifiers: holes.IdentifierCounts = field(default_factory=holes.IdentifierCounts)


class Completer:
    def __init__(self, model_dir: str | Path | None = None, device: str = "auto", threads: int = 0, *,
                 verify_files: bool = True, float_graphs: bool | None = None, cuda_graphs: bool = True):
        self.model_dir = Path(model_dir) if model_dir is not None else SHIPPED
        self.manifest = load_manifest(self.model_dir, verify_files)
        kind = self.manifest.get("kind", "slm")
        if kind != "slm":
            raise ModelError(f"{self.model_dir} holds the {kind} model, not the SLM: serve it with the setting "
                             f"anycode.model = {kind} (`anycode serve --model {kind}`)")
        try:   # the language the model was trained on, as its directory records it
            self.lang = grammars.of_model(self.model_dir)
        except KeyError as e:
            raise ModelError(f"{self.model_dir}: {e.args[0]}") from e
        try:
            self.vocab = Vocab.load(self.model_dir / "vocab.json")
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot read {self.model_dir / 'vocab.json'}: {e}") from e
        self.table = None
        if (self.model_dir / "grammar.json").exists():
            from anycode.model.grammar_table import GrammarTable
            try:
                self.table = GrammarTable.load(self.model_dir / "grammar.json")
            except (OSError, ValueError, KeyError) as e:
                raise ModelError(f"cannot read {self.model_dir / 'grammar.json'}: {e}") from e
        m = self.manifest
        context_once = bool(m.get("model", {}).get("context_once", False))
        self.backend = OrtBackend(self.model_dir, device, threads, graphs_of(context_once), float_graphs,
                                  cuda_graphs)
        self.device = self.backend.device
        self.provider = self.backend.provider
        self.decoder = Decoder(self.backend, self.vocab, self.table, lang=self.lang, max_paths=m["max_paths"],
                               max_length=m["max_length"], context_once=context_once,
                               file_tokens=int(m.get("model", {}).get("file_tokens", 0)))
        self.parser = self.lang.new_parser()
        self.leaf_cache = LeafCache()
        self.score_memo = ScoreMemo()      # the last context's network outputs by hypothesis
        self._docs: OrderedDict[str, _Document] = OrderedDict()
        self._lock = threading.Lock()
        # search bounds: steps per hypothesis, the step after which beams are steered to close, DFS depth
        self.max_steps = 64
        self.soft_steps = 40
        # hypotheses steered closed past soft_steps are not offered (random weights close no other way: keep theirs)
        self.drop_forced = not m.get("untrained", False)
        self.max_depth = 10
        # past the deadline with nothing finished, one hypothesis is closed in at most close_steps
        # steps and `overshoot` seconds more (the hard deadline)
        self.close_steps = 24
        self.overshoot = 0.1
        self.stats = {"requests": 0, "no_hole": 0, "completions": 0, "cancelled": 0, "deadline": 0, "closing": 0,
                      "incremental_parses": 0, "context_hits": 0, "context_misses": 0,
                      "dropped_unparsable": 0, "dropped_forced": 0, "widened": 0, "fallback": 0,
                      "any_string": 0, "closed_string": 0}
        self.last: dict = {}

    # ------------------------------------------------------------ documents

    def close_document(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri, None)

    def _document(self, uri: str) -> _Document | None:
        if not uri:
            return None
        doc = self._docs.get(uri)
        if doc is None:
            doc = self._docs[uri] = _Document()
            while len(self._docs) > MAX_DOCUMENTS:
                self._docs.popitem(last=False)
        self._docs.move_to_end(uri)
        return doc

    @property
    def note(self) -> str:
        """How the model runs, when the user should know (the backend's warning), else ""."""
        return self.backend.note

    def counters(self) -> dict:
        """The search's memo and the leaf cache: hits, misses and sizes; the typed starts searched
        again wider and the operand holes searched after the whole expression's (anycode/stats)."""
        m, c = self.score_memo, self.leaf_cache
        return {"scoreMemo": {"hits": m.hits, "misses": m.misses},
                "leafCache": {"entries": len(c.data), "max": c.max_entries},
                "typedSearches": {k: self.stats[k] for k in ("widened", "fallback", "any_string", "closed_string")}}

    @property
    def leaf_hit_rate(self) -> float:
        c = self.leaf_cache
        return c.hits / max(c.hits + c.misses, 1)

    # ------------------------------------------------------------ completion

    def complete(self, source: bytes, cursor: int, *, uri: str = "", version: int = 0, beam_size: int = 5,
                 max_items: int = 5, deadline: float | None = None,
                 cancelled: Callable[[], bool] | None = None, prior: tuple[bytes, object] | None = None) -> list[Candidate]:
        """Ranked completions of the expression at byte offset `cursor` of `source` ([] where no
        expression can go).  `deadline` (time.monotonic() seconds) ends the search early with what
        is finished, or when nothing is, with one hypothesis closed in at most `overshoot` seconds
        more; `cancelled()` returning True raises Cancelled.  Both are checked between steps.
        `prior`: (a buffer, its tree-sitter tree), e.g. `source` as the language server parsed it: the
        hole's parse starts from that tree (incrementally) rather than from the document's last hole."""
        check_request(source, cursor, beam_size, max_items)
        with self._lock:
            return self._complete(bytes(source), cursor, uri, beam_size, max_items, deadline, cancelled, prior)

    def _complete(self, source, cursor, uri, beam_size, max_items, deadline, cancelled, prior) -> list[Candidate]:
        t0 = time.perf_counter()
        self.stats["requests"] += 1
        last = self.last = {"uri": uri}

        hard = None if deadline is None else deadline + self.overshoot

        def check():
            if cancelled is not None and cancelled():
                self.stats["cancelled"] += 1
                raise Cancelled()
            if hard is not None and time.monotonic() >= hard:
                self.stats["deadline"] += 1
                raise Stopped()

        def closing() -> bool:
            late = time.monotonic() >= deadline
            self.stats["closing"] += late
            return late

        check_safe = _swallow_stop(check)
        if not check_safe():
            return []
        doc = self._document(uri)
        hole = holes.find_typed_hole(source, cursor, lang=self.lang, parser=self.parser, table=self.table,
                                     prev=prior or (doc.prev if doc is not None else None),
                                     identifiers=doc.identifiers if doc is not None else None)
        last["hole_ms"] = (time.perf_counter() - t0) * 1e3
        if hole is None:
            self.stats["no_hole"] += 1
            return []
        if doc is not None and hole.offset == 0:
            doc.prev = (hole.ph_source, hole.ph_tree)
        self.stats["incremental_parses"] += hole.incremental
        last.update(typed=hole.typed, start=hole.start, end=hole.end, incremental=hole.incremental)
        timing = {"search_ms": 0.0, "verify_ms": 0.0}
        out = self._search(hole, doc, beam_size, max_items, check, deadline, closing, timing)
        if out == [] and hole.fallback is not None:
            # the whole expression under the typed start answered nothing: the operand's own hole
            # (holes.find_typed_hole), whose answers repeat the typed text and close it
            self.stats["fallback"] += 1
            last.update(fallback=True)
            out = self._search(hole.fallback, doc, beam_size, max_items, check, deadline, closing, timing)
        out = self._closed_string(hole, out or [], max_items)
        if not out:
            return []
        self.stats["completions"] += 1
        last.update(**timing, total_ms=(time.perf_counter() - t0) * 1e3, candidates=len(out))
        return out

    def _search(self, hole, doc, beam_size, max_items, check, deadline, closing, timing) -> list[Candidate] | None:
        """The candidates of one hole (None: stopped at the deadline before the search): its context
        encoded, searched under its typed start, and where that answers nothing, once more wider."""
        try:
            ctx = self.decoder.prepare(hole.tree, hole.h, self.leaf_cache,
                                       doc.contexts if doc is not None else None, check)
        except Stopped:
            return None
        if ctx is None:
            self.stats["no_hole"] += 1
            return []
        self.stats["context_hits" if ctx.stats["context_hit"] else "context_misses"] += 1
        prefix = Prefix(hole.typed, hole.typed_type, lang=self.lang)

        def answers(width: int, prefix: Prefix = prefix) -> list[Candidate]:
            return self._answers(ctx, hole, prefix, width, max_items, check, deadline, closing, timing)

        out = answers(beam_size)
        if not out and prefix.strings and (deadline is None or time.monotonic() < deadline):
            # a typed string that the model cannot spell (`'MODULE' in`, `'MODULE`): any string stands
            # for it, and the answers are the model's expressions around the user's strings
            self.stats["any_string"] += 1
            prefix = Prefix(hole.typed, hole.typed_type, lang=self.lang, any_string=True)
            out = answers(beam_size, prefix)
        if not out and prefix and (deadline is None or time.monotonic() < deadline):
            # every tree of the beam lost: under a typed start, longer chains that agree with it
            # (`op.get().strip().strip()...`) can push the short answer (`op.get_bind`) out of a
            # narrow beam early; a wider one keeps it
            self.stats["widened"] += 1
            out = answers(beam_size * WIDEN, prefix)
        self.last.update(ctx.stats)
        return out

    def _closed_string(self, hole, out: list[Candidate], max_items: int) -> list[Candidate]:
        """`out` with, where the typed text ends inside a string literal, that text closed (the
        string's quote, then the brackets it left open) among the answers, last, where it parses in
        the buffer: the one answer that is what the user typed, and an answer where the model has none."""
        quote = self.lang.open_string(hole.typed)
        if not quote:
            return out
        text = hole.typed + self.lang.closers(hole.typed)
        if any(c.text == hole.lead + text + hole.closers for c in out) or not hole.verify(text, None, self.parser):
            return out
        self.stats["closed_string"] += 1
        logp = min((c.logprob for c in out), default=-1.0)
        return out[: max_items - 1] + [Candidate(hole.lead + text + hole.closers, logp, hole.start, hole.end)]

    def _answers(self, ctx, hole, prefix, beam_size, max_items, check, deadline, closing, timing) -> list[Candidate]:
        """The search's finished trees at one beam width, as candidates: printed, checked against the
        typed text and in the buffer, best first."""
        t1 = time.perf_counter()
        finished = self.decoder.search(ctx, beam_size, prefix, max_steps=self.max_steps,
                                       soft_steps=self.soft_steps, max_depth=self.max_depth, check=check,
                                       keep=max(beam_size, max_items),
                                       closing=None if deadline is None else closing,
                                       close_steps=self.close_steps, memo=self.score_memo,
                                       yield_late=hole.fallback is not None, frame=(hole.lead, hole.closers))
        t2 = time.perf_counter()
        out: list[Candidate] = []
        seen, answers = set(), set()
        for f in finished:
            if len(out) >= max_items:
                break
            if self.drop_forced and f.hyp.nsteps > self.soft_steps:
                # closed only because the search steered it closed: a chain the model was lost in
                # (seen after typed starts it cannot produce, `base64.now().strip().strip()...`)
                self.stats["dropped_forced"] += 1
                continue
            text = f.text
            if text in seen:
                continue
            seen.add(text)
            if not hole.verify(text, f.node, self.parser):
                self.stats["dropped_unparsable"] += 1
                continue
            # as the user typed its start; after a typed `f(a, ` the whole call, closed
            answer = hole.lead + prefix.respell(text) + hole.closers
            if prefix.respell(text) == hole.typed:
                continue                  # a string that stood for the typed one, and nothing more
            if answer not in answers:     # two strings that stood for a typed one write the same answer
                answers.add(answer)
                out.append(Candidate(answer, f.logp, hole.start, hole.end))
        timing["search_ms"] += (t2 - t1) * 1e3
        timing["verify_ms"] += (time.perf_counter() - t2) * 1e3
        return out


def _swallow_stop(check):
    def ok() -> bool:
        try:
            check()
        except Stopped:
            return False
        return True
    return ok
