"""The anycode language server (pygls 2.x).

Requests are answered on the asyncio event loop; the model runs in one worker
thread of the model host (host.py; the completer is not thread safe), one job at a
time:

* a request is pinned, when it arrives, to the document version and the byte
  offset of its cursor (`AnycodeProtocol._handle_request`), so later edits can
  never shift it;
* one job per document (jobs.py): a new request supersedes the running one, a
  second one at the same place shares it, a newer version or $/cancelRequest
  cancels it;
* the typing-along cache (typealong.py) answers keystrokes that agree with a
  shown candidate without the model.

The completer is what model/completer.py's `Completer` protocol describes
(runtime.Completer), and answers `Candidate`s.

The model loads lazily in the background after `initialized`, with $/progress
and `anycode/status` notifications ({device, lastLatencyMs, state, message});
a request that comes first waits for it within its time budget.  A model that
cannot load is reported once with window/showMessage; the server stays up and
answers empty lists.

Also: UTF-8 positions when the client offers them (else UTF-16, or UTF-32 when
that is all it offers); a cursor inside a comment, outside the document, in a
document in a language the model was not trained on (its languageId, else its file suffix:
anycode.grammars) or over MAX_DOCUMENT_BYTES gets [] without the model; the custom
request `anycode/stats` returns counters, the settings in force and the open
documents (tests, benchmarks, the Neovim probe); `anycode serve --completer
MODULE:FACTORY` (hidden) swaps the completer for debugging.

Code search (search.py): the workspace folders' functions indexed in the background,
`anycode/search` and `?query` in workspace/symbol.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import math
import sys
import threading
import time
import traceback
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pygls.lsp.server import LanguageServer
from pygls.protocol.language_server import lsp_method

from anycode import __version__
from anycode.grammars import Language
from anycode.model.completer import Candidate
from anycode.server import search
from anycode.server import settings as settings_mod
from anycode.server.documents import ENCODINGS, UTF8, UTF16, Document, decode, encode, position_in
from anycode.server.host import Factory, ModelHost, runtime_completer
from anycode.server.jobs import Job, JobCancelled, Scheduler, Snapshot, Stats
from anycode.server.jsonrpc import SafeProtocol
from anycode.server.typealong import TypeAlongCache

log = logging.getLogger("anycode.server")

STATUS = "anycode/status"
STATS = "anycode/stats"
COMPLETION_METHODS = (types.TEXT_DOCUMENT_COMPLETION, types.TEXT_DOCUMENT_INLINE_COMPLETION)
MAX_DOCUMENT_BYTES = 16 << 20  # larger documents get no completions (documents.py parses a block at a time)
TRIM_AFTER_BYTES = 1 << 20      # closing a document this large hands freed memory back (_trim_heap)
MAX_PINNED = 256               # snapshots of requests that have not run yet (each holds its buffer)
CLIENT_REPLY_TIMEOUT = 10.0    # seconds to wait for the client's answer to our own requests
TRIGGER_CHARACTERS = [".", "(", "[", ","]


class AnycodeProtocol(SafeProtocol):
    """pygls' protocol behind jsonrpc.py's checks, with three changes: UTF-8 positions
    when the client offers them; documents live in the server (bytes + tree), not in
    pygls' workspace; completion requests are pinned to their document state on arrival."""

    _server: "AnycodeServer"

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        if general is not None and general.position_encodings and UTF8 in general.position_encodings:
            general.position_encodings = [UTF8] + [e for e in general.position_encodings if e != UTF8]
        return (yield from super().lsp_initialize(params))

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params):
        self._server.did_open(params)
        yield from ()

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params):
        self._server.did_change(params)
        yield from ()

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params):
        self._server.did_close(params)
        yield from ()

    def _handle_request(self, msg_id, method_name, params):
        if method_name not in COMPLETION_METHODS:
            return super()._handle_request(msg_id, method_name, params)
        self._server.pin(msg_id, params)
        super()._handle_request(msg_id, method_name, params)
        future = self._request_futures.get(msg_id)
        pinned = self._server.pinned
        if future is None:   # answered already (or never started): its snapshot goes now
            pinned.pop(msg_id, None)
        else:                # a request cancelled before it ran leaves its snapshot behind
            future.add_done_callback(lambda _f: pinned.pop(msg_id, None))


class _QuietCancel(logging.Filter):
    """pygls logs a traceback for every request answered RequestCancelled."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, JsonRpcRequestCancelled):
            return False
        return not record.getMessage().startswith("Cancel notification for unknown message id")


class AnycodeServer(LanguageServer):
    def __init__(self, completer_factory: Factory | None = None,
                 defaults: dict[str, Any] | None = None):
        super().__init__("anycode", __version__, protocol_cls=AnycodeProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.docs: dict[str, Document] = {}
        self.parsers: dict[Language, Any] = {}   # a tree-sitter parser per language seen
        self.defaults = defaults or {}   # from the command line; the client's settings override them
        self.settings, _ = settings_mod.parse(self.defaults)
        self.init_options: Any = None
        self.model = ModelHost(completer_factory)
        self.cache = TypeAlongCache()
        self.pinned: dict[Any, Snapshot] = {}
        self.stats = Stats()
        self.scheduler = Scheduler(self.model, self.stats, self._answered, self._failed)
        self.last_latency_ms: float | None = None
        self._status_sent = 0.0
        self._status_due = False
        self._progress_n = 0
        self._big_logged: set[str] = set()
        self.search = search.WorkspaceIndex(self.log_line_threadsafe,
                                            busy=lambda: self.scheduler.busy(search.QUIET_S))
        self.search_roots: list = []
        self.event_loop: asyncio.AbstractEventLoop | None = None   # set at initialize

    # ------------------------------------------------------------ messages out

    @property
    def encoding(self) -> str:
        try:
            enc = self.workspace.position_encoding
        except RuntimeError:
            return UTF16
        enc = getattr(enc, "value", enc)
        return enc if enc in ENCODINGS else UTF16

    def log_message(self, message: str, kind: types.MessageType = types.MessageType.Log) -> None:
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.INFO, "%s", message)
        self.window_log_message(types.LogMessageParams(type=kind, message=message))

    def log_line_threadsafe(self, message: str) -> None:
        """log_message from any thread (the indexing thread's lines)."""
        loop = self.event_loop
        if loop is None or loop.is_closed():
            log.info("%s", message)
        else:
            loop.call_soon_threadsafe(self.log_message, message)

    def show_message(self, message: str, kind: types.MessageType) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))
        self.log_message(message, kind)

    def send_status(self, force: bool = True) -> None:
        """Send anycode/status; unforced sends (after each completion) go out at
        most every 250 ms, the last one delayed rather than dropped."""
        now = time.monotonic()
        wait = self._status_sent + 0.25 - now
        if not force and wait > 0:
            if not self._status_due:
                self._status_due = True
                asyncio.get_running_loop().call_later(wait, self.send_status)
            return
        self._status_sent, self._status_due = now, False
        status: dict[str, Any] = {"device": self.model.device or self.settings.device,
                                  "state": self.model.state}
        if self.last_latency_ms is not None:
            status["lastLatencyMs"] = round(self.last_latency_ms, 1)
        if self.model.message:
            status["message"] = self.model.message
        if self.model.interim_serving:
            status["interim"] = True
        self.protocol.notify(STATUS, status)

    # ------------------------------------------------------------ settings

    def apply_settings(self, *layers: Any) -> None:
        new, warnings = settings_mod.parse(self.defaults, self.init_options, *layers)
        for w in warnings:
            self.show_message(w, types.MessageType.Warning)
        old, self.settings = self.settings, new
        if new.searchRanking != old.searchRanking and self.search.roots:   # another ranking, another index
            asyncio.ensure_future(search.index_workspace(self, list(self.search.roots)))
        if new.model_key() != self.model.key:
            asyncio.ensure_future(self.load_model())
        elif new != old:
            self.log_message(f"settings: {new}")

    async def pull_settings(self) -> Any:
        """The client's `anycode` section through workspace/configuration, if it has one."""
        caps = self.client_capabilities.workspace
        if caps is None or not caps.configuration:
            return None
        try:
            result = await asyncio.wait_for(self.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=settings_mod.SECTION)])),
                CLIENT_REPLY_TIMEOUT)
        except Exception as exc:  # the client failed or never answered: keep what we have
            self.log_message(f"workspace/configuration failed: {exc!r}", types.MessageType.Warning)
            return None
        return _plain(result[0]) if isinstance(result, (list, tuple)) and result else None

    # ------------------------------------------------------------ model

    async def load_model(self) -> None:
        s = self.settings
        host = self.model
        host.generation += 1
        gen = host.generation
        host.key = s.model_key()
        host.state, host.message, host.completer = "loading", "loading the model", None
        host.interim_serving = False
        host.ready.clear()
        self.stats.loads += 1
        self.send_status()
        token = await self._progress_begin("anycode", "Loading the completion model")
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        where = f" at {s.modelPath}" if s.modelPath else ""
        interim = None
        try:
            if host.interim is not None:
                try:
                    interim = await loop.run_in_executor(host.executor, host.interim, s)
                except Exception as exc:  # the full load below says what is wrong, if anything is
                    log.info("no interim completer: %r", exc)
                if gen != host.generation:
                    return
                if interim is not None:
                    host.completer, host.interim_serving = interim, True
                    ms = (time.monotonic() - t0) * 1000
                    host.state, host.message = "ready", "on the CPU while the model loads on the GPU"
                    host.ready.set()
                    self.send_status()
                    self.log_message(f"model loaded on the CPU in {ms:.0f} ms; answering from it while it "
                                     f"loads on the GPU", types.MessageType.Info)
            # with an interim completer serving from the worker, the load runs beside it
            completer = await loop.run_in_executor(host.loader if interim is not None else host.executor,
                                                   host.factory, s)
        except Exception as exc:
            if gen != host.generation:
                return
            if interim is not None:
                host.message = f"anycode could not load its model on the GPU{where}: {str(exc).rstrip('.')}."
                self.show_message(host.message + " Completions run on the CPU.", types.MessageType.Warning)
            else:
                host.state = "error"
                host.message = f"anycode could not load its model{where}: {str(exc).rstrip('.')}."
                self.show_message(host.message + " Completions are off until a model loads.",
                                  types.MessageType.Error)
            log.debug("model load failed:\n%s", traceback.format_exc())
        else:
            if gen != host.generation:
                return
            if interim is not None and completer.device == "cpu":
                # ONNX Runtime has a CUDA provider but fell back to the CPU (no usable GPU): the
                # interim completer is the one made for the CPU (int8 graphs as shipped), keep it
                completer = interim
                self.log_message("no usable GPU: the model stays on the CPU", types.MessageType.Warning)
            host.completer = completer
            ms = (time.monotonic() - t0) * 1000
            host.state, host.message = "ready", f"model loaded in {ms:.0f} ms"
            self.log_message(f"model loaded on {host.device or s.device} in {ms:.0f} ms "
                             f"({s.model}, {s.modelPath or 'shipped model'}, threads {s.threads or 'auto'})",
                             types.MessageType.Info)
            if completer.note:
                self.log_message(f"anycode: {completer.note}", types.MessageType.Warning)
        finally:
            if gen == host.generation:
                host.interim_serving = False
                host.ready.set()
                self.send_status()
            await self._progress_end(token, host.message)

    async def _progress_begin(self, title: str, message: str, kind: str = "load") -> str | None:
        caps = self.client_capabilities.window
        if caps is None or not caps.work_done_progress:
            return None
        self._progress_n += 1
        token = f"anycode-{kind}-{self._progress_n}"
        try:
            await asyncio.wait_for(self.work_done_progress.create_async(token), CLIENT_REPLY_TIMEOUT)
        except Exception:
            return None
        self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, message=message, cancellable=False))
        return token

    async def _progress_end(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    # ------------------------------------------------------------ documents

    def parser_for(self, lang: Language):
        parser = self.parsers.get(lang)
        if parser is None:
            parser = self.parsers[lang] = lang.new_parser()
        return parser

    def did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        td = params.text_document
        self._forget(td.uri)
        self.docs[td.uri] = Document.from_text(td.uri, td.text, td.version, td.language_id)

    def did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        doc = self.docs.get(params.text_document.uri)
        if doc is None:
            log.warning("didChange for a document that is not open: %s", params.text_document.uri)
            return
        enc = self.encoding
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                doc.apply_change((r.start.line, r.start.character), (r.end.line, r.end.character),
                                 change.text, enc)
            else:
                doc.apply_change(None, None, change.text, enc)
        doc.version = params.text_document.version  # in-flight jobs on the old version stop

    def did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._forget(params.text_document.uri)

    def _forget(self, uri: str) -> None:
        doc = self.docs.pop(uri, None)
        if doc is not None:
            doc.closed = True
            if len(doc.text) >= TRIM_AFTER_BYTES:   # once the requests still holding it are done
                asyncio.get_running_loop().call_later(1.0, _trim_heap)
            if self.model.completer is not None:  # its per-document caches; in the worker, behind any run
                try:
                    self.model.executor.submit(self.model.completer.close_document, uri)
                except RuntimeError:  # shut down
                    pass
        self.cache.drop(uri)
        self._big_logged.discard(uri)

    # ------------------------------------------------------------ completion

    def pin(self, msg_id: Any, params: Any) -> None:
        """Called as a completion request arrives, before any later message."""
        try:
            uri, pos = params.text_document.uri, params.position
        except AttributeError:
            return
        snap = Snapshot(uri=uri, t0=time.monotonic())
        doc = self.docs.get(uri)
        if doc is not None:
            snap.doc, snap.version, snap.source, snap.lines = doc, doc.version, doc.text, doc.line_starts
            snap.cursor = doc.offset_at(pos.line, pos.character, self.encoding)
        if len(self.pinned) >= MAX_PINNED:  # a client that never waits for its answers: the oldest go
            for key in list(self.pinned)[:MAX_PINNED // 2]:
                del self.pinned[key]
        self.pinned[msg_id] = snap

    async def candidates(self, params: Any) -> tuple[Snapshot, list[Candidate]]:
        self.stats.requests += 1
        snap = self.pinned.pop(self.protocol.msg_id, None)
        if snap is None:  # not pinned (cannot happen through the protocol): pin now
            self.pin(None, params)
            snap = self.pinned.pop(None)
        doc = snap.doc
        if doc is None:
            log.info("completion for a document that is not open: %s", snap.uri)
            return snap, []
        if snap.cursor is None or doc.lang is None or not self.model.serves(doc.lang):
            return snap, []
        if doc.is_stale(snap.version):
            self.stats.cancelled += 1
            raise JsonRpcRequestCancelled("the document changed before the request ran")
        if len(snap.source) > MAX_DOCUMENT_BYTES:
            if snap.uri not in self._big_logged:
                self._big_logged.add(snap.uri)
                self.log_message(f"{snap.uri}: {len(snap.source)} bytes, over the "
                                 f"{MAX_DOCUMENT_BYTES} byte limit: no completions",
                                 types.MessageType.Warning)
            return snap, []
        parser = self.parser_for(doc.lang)
        if doc.in_comment(parser, snap.cursor):
            return snap, []
        s = self.settings
        hit = self.cache.lookup(snap.uri, snap.source, snap.cursor)
        if hit is not None:
            self.stats.cache_hits += 1
            return snap, hit[:s.maxItems]

        # the completer starts from the server's tree where the document is parsed whole
        tree = doc.tree(parser).copy() if doc.parsed_whole else None
        try:
            return snap, await self.scheduler.answer(snap, s, tree)
        except JobCancelled:
            raise JsonRpcRequestCancelled("superseded by a newer request or edit") from None

    def _answered(self, job: Job, cands: list[Candidate], ms: float) -> None:
        self.last_latency_ms = ms
        line, col = job.doc.point_at(job.cursor)
        self.log_message(f"completion {job.doc.uri}:{line + 1}:{col + 1} v{job.version}: "
                         f"{len(cands)} items in {ms:.1f} ms (beam {job.settings.beamSize})")
        self.send_status(force=False)
        self.cache.store(job.doc.uri, job.source, job.cursor, cands)

    def _failed(self, exc: BaseException) -> None:
        self.log_message(f"completion failed: {exc!r}\n{traceback.format_exc()}", types.MessageType.Error)

    # ------------------------------------------------------------ answers

    def edit_for(self, snap: Snapshot, cand: Candidate) -> tuple[types.Range, str, str] | None:
        """(range, new text, typed text in range) for a candidate.  LSP wants the
        range on the cursor's line: a typed part that began on an earlier line is
        kept as is when the candidate repeats it, else the candidate is dropped."""
        src, cursor, enc = snap.source, snap.cursor, self.encoding
        start, end = cand.start, cand.end
        if not (0 <= start <= cursor <= end <= len(src)):
            return None
        text = encode(cand.text)
        line_start = src.rfind(b"\n", 0, cursor) + 1
        if start < line_start:
            k = line_start - start
            if text[:k] != src[start:line_start]:
                return None
            text, start = text[k:], line_start
        if b"\n" in src[cursor:end]:
            return None
        # positions from the pinned source (the document may have moved on)
        pos = lambda off: types.Position(*position_in(src, off, enc, snap.lines))  # noqa: E731
        rng = types.Range(start=pos(start), end=pos(end))
        return rng, decode(text), decode(src[start:cursor])


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system.  glibc's allocator raises its mmap
    threshold after the first large buffer is freed, so the next ones come from the heap, whose
    pages it keeps when they are freed: the resident set would stay as high as the largest
    document ever open.  Elsewhere nothing to do."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


def _plain(value: Any) -> Any:
    """JSON-like data as dicts and lists (pygls may hand over namedtuples)."""
    if hasattr(value, "_asdict"):
        value = value._asdict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def percent(logprob: float) -> str:
    return f"anycode {100 * math.exp(min(logprob, 0.0)):.1f}%"


def completion_items(server: AnycodeServer, snap: Snapshot, cands: list[Candidate]) -> list[types.CompletionItem]:
    items = []
    for cand in cands:
        edit = server.edit_for(snap, cand)
        if edit is None:
            continue
        rng, new_text, typed = edit
        items.append(types.CompletionItem(
            label=cand.text,
            kind=types.CompletionItemKind.Snippet,
            detail=percent(cand.logprob),
            sort_text=f"{len(items):04d}",
            filter_text=new_text if new_text.startswith(typed) else typed + new_text,
            preselect=not items or None,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(range=rng, new_text=new_text),
        ))
    return items


def inline_items(server: AnycodeServer, snap: Snapshot, cands: list[Candidate]) -> list[types.InlineCompletionItem]:
    items = []
    for cand in cands:
        edit = server.edit_for(snap, cand)
        if edit is not None:
            rng, new_text, _ = edit
            items.append(types.InlineCompletionItem(insert_text=new_text, range=rng))
    return items


# ---------------------------------------------------------------- the server


def make_server(completer_factory: Factory | None = None,
                defaults: dict[str, Any] | None = None) -> AnycodeServer:
    ls = AnycodeServer(completer_factory, defaults)
    filt = _QuietCancel()
    logging.getLogger("pygls.protocol.json_rpc").addFilter(filt)

    @ls.feature(types.INITIALIZE)
    def initialize(ls: AnycodeServer, params: types.InitializeParams):
        ls.init_options = _plain(params.initialization_options)
        ls.settings, _ = settings_mod.parse(ls.defaults, ls.init_options)  # warnings are shown once initialized
        ls.search_roots = search.roots_of(params)
        ls.event_loop = asyncio.get_running_loop()
        if ls.model.factory is runtime_completer:  # import onnxruntime while the client settles in
            ls.model.executor.submit(importlib.import_module, "anycode.model.runtime")

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: AnycodeServer, params: types.InitializedParams):
        asyncio.ensure_future(search.index_workspace(ls, ls.search_roots))
        ls.apply_settings(await ls.pull_settings())

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: AnycodeServer, params: types.DidChangeConfigurationParams):
        pulled = await ls.pull_settings()
        ls.apply_settings(pulled if pulled is not None else _plain(params.settings))

    @ls.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS, resolve_provider=False))
    async def completion(ls: AnycodeServer, params: types.CompletionParams):
        snap, cands = await ls.candidates(params)
        return types.CompletionList(is_incomplete=True, items=completion_items(ls, snap, cands))

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: AnycodeServer, params: types.InlineCompletionParams):
        snap, cands = await ls.candidates(params)
        return types.InlineCompletionList(items=inline_items(ls, snap, cands))

    @ls.feature(types.WORKSPACE_SYMBOL)
    async def workspace_symbol(ls: AnycodeServer, params: types.WorkspaceSymbolParams):
        return await search.workspace_symbols(ls, params.query)

    @ls.feature(search.SEARCH)
    async def search_request(ls: AnycodeServer, params: Any = None):
        """Code search by meaning (not part of LSP): [{uri, range, name, score}] best first."""
        return await search.search_request(ls, _plain(params))

    @ls.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    async def did_change_workspace_folders(ls: AnycodeServer, params: types.DidChangeWorkspaceFoldersParams):
        await search.folders_changed(ls, params)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: AnycodeServer, params: types.DidSaveTextDocumentParams):
        search.did_save(ls, params)

    @ls.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: AnycodeServer, params: types.DidChangeWatchedFilesParams):
        search.did_change_watched_files(ls, params)

    @ls.feature(STATS)
    def stats(ls: AnycodeServer, params: Any = None):
        """Counters for tests and benchmarks (not part of LSP)."""
        st = ls.stats
        lat = sorted(st.latencies_ms)
        q = (lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))], 2) if lat else None)
        return {
            "requests": st.requests, "cacheHits": st.cache_hits, "shared": st.shared,
            "superseded": st.superseded, "cancelled": st.cancelled,
            "modelRuns": st.model_runs, "modelRunsCancelled": st.model_runs_cancelled,
            "modelBusy": st.model_busy, "jobs": len(ls.scheduler.jobs), "loads": st.loads,
            "pinned": len(ls.pinned), "futures": len(ls.protocol._request_futures),
            "state": ls.model.state, "device": ls.model.device, "encoding": ls.encoding,
            "settings": dataclasses.asdict(ls.settings),
            "p50Ms": q(0.5), "p95Ms": q(0.95),
            "documents": [{"uri": u, "version": d.version, "bytes": len(d.text), "parses": d.parses,
                           "parsedMax": d.parsed_max}
                          for u, d in ls.docs.items()],
            "torchLoaded": "torch" in sys.modules,
            **(ls.model.completer.counters() if ls.model.completer is not None else
               {"scoreMemo": None, "leafCache": None, "typedSearches": None}),
            "threads": threading.active_count(),
            "searchIndex": ls.search.counts(),
        }

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: AnycodeServer, params: Any = None):
        ls.scheduler.cancel_all()
        ls.model.shutdown()
        ls.search.shutdown()

    return ls


def load_factory(spec: str) -> Factory:
    """`module:attr` -> a completer factory taking Settings (a debugging hook)."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "make_completer")
