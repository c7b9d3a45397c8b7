"""Completion jobs: one per document, run one at a time in the model host's worker thread.

* a request is pinned when it arrives to the document version and the cursor's byte offset (a
  `Snapshot`, taken by lsp.py), so later edits never shift it;
* a new request for the document supersedes the running job, which stops between beam steps
  through the completer's `cancelled` callback and is answered RequestCancelled; a second request
  at the same version, cursor and settings (completion and inline completion together) shares it;
  a newer document version, $/cancelRequest of every requester, or shutdown cancels it.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from anycode.model.completer import Candidate, Completer
from anycode.server.documents import Document
from anycode.server.host import ModelHost
from anycode.server.settings import Settings


# A request that arrives while the model loads waits for it this long at most, and its time budget
# starts once the model is there: a session's first request answers late rather than empty (the
# editor asked once and shows what it gets), and a newer request supersedes it meanwhile.
LOAD_WAIT_S = 10.0


class JobCancelled(Exception):
    """The job was superseded, its document changed, or every requester went away."""


@dataclass
class Snapshot:
    """What a completion request refers to, taken the moment it arrives."""
    uri: str
    t0: float
    doc: Document | None = None
    version: int = 0
    source: bytes = b""
    cursor: int | None = None
    lines: Any = None             # the document's line index at that version


@dataclass
class Job:
    doc: Document
    version: int
    source: bytes
    cursor: int
    settings: Settings
    deadline: float
    tree: Any = None              # a copy of the document's tree at this version (the hole's parse starts there)
    cancelled: bool = False
    waiters: int = 0
    task: asyncio.Task | None = None

    def is_cancelled(self) -> bool:
        # Read from the worker thread between beam steps: plain attribute reads only.
        return self.cancelled or self.doc.version != self.version or self.doc.closed

    def same_place(self, snap: Snapshot, settings: Settings) -> bool:
        return (not self.is_cancelled() and snap.version == self.version
                and snap.cursor == self.cursor and settings == self.settings)


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    shared: int = 0
    superseded: int = 0
    cancelled: int = 0
    model_runs: int = 0           # completer.complete calls started
    model_runs_cancelled: int = 0
    model_busy: bool = False
    loads: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Scheduler:
    """The documents' jobs.  `answered(job, candidates, ms)` is called, on the event loop, with
    every answer the completer gives (before the job's requesters get it); `failed(exc)` with every
    failure that is not a cancellation (the requesters get [])."""

    def __init__(self, host: ModelHost, stats: Stats, answered: Callable[[Job, list[Candidate], float], None],
                 failed: Callable[[BaseException], None]):
        self.host = host
        self.stats = stats
        self.jobs: dict[str, Job] = {}
        self.last_end = float("-inf")    # when the last job ended (time.monotonic())
        self._answered = answered
        self._failed = failed

    async def answer(self, snap: Snapshot, settings: Settings, tree: Any = None) -> list[Candidate]:
        """The candidates at `snap`: from the document's running job when it is at the same place,
        else from a new one (superseding the running one).  Raises JobCancelled when the job is
        superseded or its document changes, asyncio.CancelledError on $/cancelRequest."""
        job = self.jobs.get(snap.uri)
        if job is not None and job.same_place(snap, settings):
            self.stats.shared += 1
        else:
            if job is not None and not job.cancelled:
                job.cancelled = True
                self.stats.superseded += 1
            job = Job(snap.doc, snap.version, snap.source, snap.cursor, settings,
                      snap.t0 + settings.timeBudgetMs / 1000, tree)
            self.jobs[snap.uri] = job
            job.task = asyncio.ensure_future(self._run(job))
            # its outcome may be nobody's (all requesters cancelled): retrieve it anyway
            job.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        job.waiters += 1
        try:
            cands = await asyncio.shield(job.task)
        except asyncio.CancelledError:  # $/cancelRequest (or shutdown)
            self.stats.cancelled += 1
            job.waiters -= 1
            if job.waiters == 0:
                job.cancelled = True
            raise
        except JobCancelled:
            self.stats.cancelled += 1
            raise
        job.waiters -= 1
        return cands

    def busy(self, quiet_s: float) -> bool:
        """Whether a job is in flight or one ended less than `quiet_s` ago: background work (the
        search index) waits meanwhile.  Plain reads, safe from another thread."""
        return bool(self.jobs) or time.monotonic() - self.last_end < quiet_s

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancelled = True

    async def _run(self, job: Job) -> list[Candidate]:
        try:
            loading = self.host.state == "loading"
            ready = await self.host.wait_ready(time.monotonic() + LOAD_WAIT_S, job.is_cancelled)
            if job.is_cancelled():
                raise JobCancelled
            if not ready or not self.host.serves(job.doc.lang):
                return []
            if loading:     # the time budget is the completion's: it starts once the model is there
                job.deadline = max(job.deadline, time.monotonic() + job.settings.timeBudgetMs / 1000)
            completer = self.host.completer
            t0 = time.monotonic()
            try:
                raw = await asyncio.get_running_loop().run_in_executor(
                    self.host.executor, self._complete_in_worker, completer, job)
            except Exception as exc:
                if isinstance(exc, JobCancelled) or job.is_cancelled():
                    raise JobCancelled from None  # runtime.Cancelled, or a failure nobody waits for
                self._failed(exc)
                return []
            ms = (time.monotonic() - t0) * 1000
            cands = [Candidate(c.text, float(c.logprob), int(c.start), int(c.end)) for c in raw]
            self.stats.latencies_ms.append(ms)
            del self.stats.latencies_ms[:-1000]
            self._answered(job, cands, ms)
            if job.is_cancelled():  # the answer is for a version that is gone
                raise JobCancelled
            return cands
        finally:
            self.last_end = time.monotonic()
            if self.jobs.get(job.doc.uri) is job:
                del self.jobs[job.doc.uri]

    def _complete_in_worker(self, completer: Completer, job: Job) -> list[Candidate]:
        if job.is_cancelled():  # superseded while it waited for the worker
            raise JobCancelled
        self.stats.model_runs += 1
        self.stats.model_busy = True
        try:
            s = job.settings
            return completer.complete(job.source, job.cursor, uri=job.doc.uri, version=job.version,
                                      beam_size=s.beamSize, max_items=s.maxItems,
                                      deadline=job.deadline, cancelled=job.is_cancelled,
                                      prior=None if job.tree is None else (job.source, job.tree))
        except BaseException:
            if job.is_cancelled():
                self.stats.model_runs_cancelled += 1
            raise
        finally:
            self.stats.model_busy = False
