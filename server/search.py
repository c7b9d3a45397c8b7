"""Code search in the server (issue 23): the workspace's functions, searched by what a query means.

When the client opens folders, their functions are indexed in a thread of their own (never the
model's worker), with $/progress when the client supports it; completions come first: the thread
runs at the lowest CPU priority and takes its next file only once no completion has been in flight
for QUIET_S (indexing beside a stream of requests doubled their latency).  The index is
model/search_index.py's, in the same file `anycode search QUERY FOLDER` uses, so a restart (or the
command) re-reads only files whose size or modification time changed; a saved file
(textDocument/didSave) or one the client watched change (workspace/didChangeWatchedFiles) is
re-read alone.  Ranking is search_index's too: the inner products of the shipped encoders' vectors
(model/shipped/search) with BM25 weighed in where bm25s is installed, BM25 alone where none ship or
the setting searchRanking is "bm25"; built once per change of the index and kept between queries.

Answers: `anycode/search` {query, limit?} -> [{uri, range, name, score}] best first, and
workspace/symbol for a query starting with `?` (every query with `anycode.searchAllSymbols`);
while the index is building they answer from what is indexed so far and the log says so.  BM25's
package (bm25s, the search extra) is optional: where BM25 alone ranks and it is missing, these two
requests answer an error saying how to install it, and nothing else changes.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError
from pygls.uris import from_fs_path, to_fs_path

from anycode import grammars

log = logging.getLogger("anycode.server.search")

SEARCH = "anycode/search"
DEFAULT_LIMIT = 20
MAX_LIMIT = 500
MAX_FILES = 50_000          # a workspace larger than this (a home folder opened by mistake) is cut
PROGRESS_EVERY_S = 0.2
QUIET_S = 0.5               # indexing resumes this long after the last completion request ended
WAIT_S = 0.05
NO_FILES: dict[str, Any] = {"files": {}}   # the index before a folder opens


def _si():
    """model/search_index.py, imported when first needed: it brings numpy and the search's data
    modules, which the server's start (initialize's answer) need not wait for."""
    from anycode.model import search_index
    return search_index


_ENCODERS: list = []


def encoders():
    """The shipped search encoders (search_runtime.shipped), loaded once, in the indexing thread; None
    where none ship, and ranking is BM25's."""
    if not _ENCODERS:
        from anycode.model import search_runtime
        try:
            _ENCODERS.append(search_runtime.shipped())
        except Exception as exc:  # unreadable encoders: BM25 ranks, the log says why
            log.warning("search encoders not loaded: %r", exc)
            _ENCODERS.append(None)
    return _ENCODERS[0]


def missing() -> str:
    return f"anycode: code search needs the bm25s package, which is not installed: {_si().INSTALL_HINT}"


def _background() -> None:
    """The indexing thread, and the encoders' threads it starts (they inherit it), at the lowest CPU
    priority: completions, which a user waits for, come first.  Linux gives each thread its own nice
    value; elsewhere the thread keeps the process's."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass


class WorkspaceIndex:
    """The index of the workspace folders' functions, kept current by one indexing thread.

    The thread owns the writes; `lock` guards the index while a file's entry changes, while it is
    saved and while a query copies its file table (entries are replaced, never changed in place),
    so a query sees each file either before or after a change and BM25 builds outside the lock.
    Completions come first: before each file the thread waits while `busy()` (the server: a completion
    in flight or just answered), and it runs at the lowest CPU priority."""

    def __init__(self, log_line: Callable[[str], None], busy: Callable[[], bool] = lambda: False):
        self.log_line = log_line      # thread-safe: the server sends it from the event loop
        self.busy = busy              # read from the indexing thread
        self.roots: list[Path] = []
        self.index_file: Path | None = None
        self.index = NO_FILES
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="anycode-index", initializer=_background)
        self.parsers: dict = {}
        self.encoders: Any = None     # the shipped encoders (set by the indexing thread), else BM25 ranks
        self.lexical = False          # BM25 ranks though encoders ship (searchRanking "bm25")
        self.state = "none"           # none (no folder) | building | ready
        self.done = self.total = self.reread = 0
        self.generation = 0           # bumped at each change of the index: the ranker is rebuilt
        self._rank: Any = None
        self._rank_generation = -1
        self.epoch = 0                # bumped at each open(): an indexing of older folders stops
        self.watching = False         # file watchers registered with the client

    def open(self, roots: list[Path], progress: Callable[[int, int], None], lexical: bool = False) -> Future:
        """Start indexing `roots` in the indexing thread (again when the folders or the ranking change:
        an indexing of the previous folders still running stops at its next file); `lexical`: BM25
        ranks even where encoders ship (the setting searchRanking "bm25")."""
        self.epoch += 1
        self.lexical = lexical
        self.roots = [r.resolve() for r in roots]
        self.state = "building"
        self.done = self.total = 0
        return self.executor.submit(self._build, self.epoch, self.roots, progress)

    def _build(self, epoch: int, roots: list[Path], progress: Callable[[int, int], None]) -> None:
        try:
            if epoch != self.epoch:
                return
            self.encoders = None if self.lexical else encoders()
            index_file = _si().index_file_for(roots, *_si().ranking_of(self.encoders))
            index = _si().load_index(index_file, self.log_line)
            with self.lock:
                self.index, self.index_file = index, index_file
                self.generation += 1
            files = _si().source_files(roots)
            if len(files) > MAX_FILES:
                self.log_line(f"anycode search: {len(files)} files in the workspace: the first {MAX_FILES} indexed")
                files = files[:MAX_FILES]
            self.total = len(files)
            for i, f in enumerate(files):
                self._wait_turn(epoch)
                if epoch != self.epoch:   # the folders changed: the next indexing starts over
                    return
                self._refresh(f)
                self.done = i + 1
                progress(self.done, self.total)
                time.sleep(0)   # let the event loop and the model's worker have the interpreter
            keep = {str(f) for f in files}
            with self.lock:
                self.index["files"] = {k: v for k, v in self.index["files"].items() if k in keep}
                self.generation += 1
            self._save()
        except Exception as exc:  # the server goes on; what was indexed stays searchable
            log.exception("indexing failed")
            self.log_line(f"anycode search: indexing failed: {exc!r}")
        finally:
            if epoch == self.epoch:
                self.state = "ready"

    def _wait_turn(self, epoch: int) -> None:
        """Wait while the server answers completions (the folders changing ends the wait)."""
        while self.busy() and epoch == self.epoch:
            time.sleep(WAIT_S)

    def _refresh(self, path: Path) -> bool:
        with self.lock:
            changed = _si().refresh_file(self.index, path, self.parsers, self.encoders, log=self._skipped)
            if changed:
                self.generation += 1
        self.reread += changed
        return changed

    def _skipped(self, message: str) -> None:
        self.log_line(f"anycode search: {message}")

    def _save(self) -> None:
        if self.index_file is None:
            return
        try:
            with self.lock:
                _si().save_index(self.index, self.index_file)
        except OSError as exc:
            self.log_line(f"anycode search: cannot save the index {self.index_file}: {exc}")

    def covers(self, path: Path) -> bool:
        """Whether a file belongs in the index: under a root, outside skipped folders, of a known language."""
        for root in self.roots:
            if path.is_relative_to(root):
                parts = path.relative_to(root).parts[:-1]
                return (_si().is_source(path) and
                        not any(p in _si().SKIP_DIRS or p.startswith(".") for p in parts))
        return False

    def changed(self, paths: list[Path]) -> Future | None:
        """Re-read (or drop) these files in the indexing thread, behind any indexing, then save."""
        paths = [p for p in paths if self.covers(p)]
        if not paths or self.state == "none":
            return None

        def run() -> None:
            reread = 0
            for p in paths:
                self._wait_turn(self.epoch)
                reread += self._refresh(p)
            if reread:
                self._save()
        try:
            return self.executor.submit(run)
        except RuntimeError:   # shut down
            return None

    def query(self, text: str, limit: int) -> list[tuple[str, int, int, str, float]]:
        """The best functions, best first (search_index.ranker, rebuilt only after a change).
        Raises ImportError without bm25s."""
        snapshot = None
        with self.lock:
            rank, generation = self._rank, self.generation
            if self._rank_generation != generation:   # a copy of the file table, ranked outside the lock
                snapshot = {**self.index, "files": dict(self.index["files"])}
        if snapshot is not None:
            rank = _si().ranker(snapshot, self.encoders)
            with self.lock:
                if generation >= self._rank_generation:
                    self._rank, self._rank_generation = rank, generation
        return rank(text, limit)

    def counts(self) -> dict[str, Any]:
        with self.lock:
            files = len(self.index["files"])
            functions = sum(len(e["functions"]) for e in self.index["files"].values())
        return {"state": self.state, "files": files, "functions": functions, "done": self.done,
                "total": self.total, "reread": self.reread, "roots": [str(r) for r in self.roots],
                "indexFile": str(self.index_file) if self.index_file else None,
                "ranking": _si().ranking_name(self.encoders) if self.state != "none" else None}

    def close(self) -> None:
        """No folder any more: an empty index, searches answer []."""
        self.epoch += 1
        with self.lock:
            self.roots, self.index_file, self.index = [], None, NO_FILES
            self.generation += 1
        self.state = "none"

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def roots_of(params: types.InitializeParams) -> list[Path]:
    """The workspace folders' paths (workspaceFolders, else rootUri, else rootPath); file URIs only."""
    uris = [f.uri for f in params.workspace_folders or []]
    if not uris and params.root_uri:
        uris = [params.root_uri]
    paths = [to_fs_path(u) for u in uris if u.startswith("file:")]
    if not paths and params.root_path:
        paths = [params.root_path]
    return [Path(p) for p in paths if p and Path(p).is_dir()]


async def index_workspace(ls: Any, roots: list[Path]) -> None:
    """Index the folders in the background, reporting $/progress; logs what was indexed."""
    if not roots:
        return
    from anycode.model import search_runtime
    if not _si().have_bm25() and (ls.settings.searchRanking == "bm25" or not search_runtime.ships()):
        ls.log_message(missing() + " (the index is built all the same)", types.MessageType.Warning)
    token = await ls._progress_begin("anycode", "Indexing the workspace's functions", "index")
    loop = asyncio.get_running_loop()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if token is not None and (now - last[0] >= PROGRESS_EVERY_S or done == total):
            last[0] = now
            report = types.WorkDoneProgressReport(message=f"{done}/{total} files",
                                                  percentage=int(100 * done / max(total, 1)))
            loop.call_soon_threadsafe(ls.work_done_progress.report, token, report)

    t0 = time.monotonic()
    building = asyncio.wrap_future(ls.search.open(roots, progress, ls.settings.searchRanking == "bm25"))
    if not ls.search.watching:
        ls.search.watching = await watch_files(ls, 10.0)
    try:
        await building
    finally:
        c = ls.search.counts()
        message = (f"indexed {c['functions']} functions of {c['files']} files in "
                   f"{time.monotonic() - t0:.1f} s ({c['reread']} read)")
        await ls._progress_end(token, message)
        ls.log_message(f"anycode search: {message}; index {c['indexFile']}", types.MessageType.Info)


async def watch_files(ls: Any, timeout: float) -> bool:
    """Ask the client to report changes of the known languages' files (client/registerCapability),
    when it can register watchers dynamically: files changed outside the editor (a checkout, a
    formatter) then reach the index too.  True when the client accepted."""
    caps = ls.client_capabilities.workspace
    watched = caps.did_change_watched_files if caps is not None else None
    if watched is None or not watched.dynamic_registration:
        return False
    suffixes = sorted({e.lstrip(".") for i in grammars.ids() for e in grammars.get(i).extensions})
    if not suffixes:
        return False
    glob = f"**/*.{{{','.join(suffixes)}}}" if len(suffixes) > 1 else f"**/*.{suffixes[0]}"
    options = types.DidChangeWatchedFilesRegistrationOptions(watchers=[types.FileSystemWatcher(glob_pattern=glob)])
    try:
        await asyncio.wait_for(ls.client_register_capability_async(types.RegistrationParams(registrations=[
            types.Registration(id="anycode-search-watch", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                               register_options=options)])), timeout)
    except Exception as exc:  # the client refused or never answered: saves still reach the index
        log.info("file watchers not registered: %r", exc)
        return False
    return True


def file_paths(uris: list[str]) -> list[Path]:
    return [Path(p) for p in (to_fs_path(u) for u in uris if u.startswith("file:")) if p]


async def ranked(ls: Any, query: str, limit: int) -> list[tuple[str, int, int, str, float]]:
    """The best functions for a query (in a thread: building BM25 may take a moment); an LSP error
    without bm25s; an empty list for an empty query."""
    if not query.strip() or limit <= 0:
        return []
    wi: WorkspaceIndex = ls.search
    try:
        found = await asyncio.to_thread(wi.query, query, limit)
    except ImportError:
        raise JsonRpcInternalError(message=missing()) from None
    if wi.state == "building":
        ls.log_message(f"anycode search: the index is still building ({wi.done} of {wi.total} files): "
                       f"answered from what is indexed so far")
    return found


def lsp_range(first: int, last: int) -> types.Range:
    """A function's whole lines (1-based first and last line) as an LSP range."""
    return types.Range(start=types.Position(line=first - 1, character=0), end=types.Position(line=last, character=0))


async def search_request(ls: Any, params: Any) -> list[dict[str, Any]]:
    """anycode/search: {query, limit?} -> [{uri, range, name, score}], best first."""
    params = params if isinstance(params, dict) else {}
    query = params.get("query")
    limit = params.get("limit", DEFAULT_LIMIT)
    if not isinstance(query, str):
        return []
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = DEFAULT_LIMIT
    found = await ranked(ls, query, min(limit, MAX_LIMIT))
    return [{"uri": from_fs_path(path), "name": name, "score": round(score, 4),
             "range": {"start": {"line": first - 1, "character": 0}, "end": {"line": last, "character": 0}}}
            for path, first, last, name, score in found]


async def workspace_symbols(ls: Any, query: str) -> list[types.SymbolInformation]:
    """workspace/symbol: a search for `?query` (or any query with searchAllSymbols); else nothing,
    since the server offers no symbols by name."""
    if query.startswith("?"):
        query = query[1:]
    elif not ls.settings.searchAllSymbols:
        return []
    found = await ranked(ls, query, DEFAULT_LIMIT)
    return [types.SymbolInformation(name=name, kind=types.SymbolKind.Function,
                                    location=types.Location(uri=from_fs_path(path), range=lsp_range(first, last)),
                                    container_name=f"{Path(path).name} {score:.2f}")
            for path, first, last, name, score in found]


async def folders_changed(ls: Any, params: types.DidChangeWorkspaceFoldersParams) -> None:
    """workspace/didChangeWorkspaceFolders: the index is of the new set of folders (its own file)."""
    removed = {Path(p).resolve() for p in file_paths([f.uri for f in params.event.removed])}
    roots = [r for r in ls.search.roots if r not in removed]
    roots += [p for p in file_paths([f.uri for f in params.event.added]) if p.is_dir() and p.resolve() not in roots]
    if roots:
        await index_workspace(ls, roots)
    else:
        ls.search.close()


def did_save(ls: Any, params: types.DidSaveTextDocumentParams) -> None:
    ls.search.changed(file_paths([params.text_document.uri]))


def did_change_watched_files(ls: Any, params: types.DidChangeWatchedFilesParams) -> None:
    ls.search.changed(file_paths([c.uri for c in params.changes]))
