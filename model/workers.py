"""Worker processes for the CPU-bound builders (corpus, dataset, features, statistics).

Workers start from a fork server (spawn where there is none), never by forking the caller: the
builders run inside processes that already have threads (tqdm's monitor, torch's and onnxruntime's
pools, a test runner's), and a child forked from such a process can wait forever on a lock that
one of those threads held at the fork. With one job the work runs here, in this process, with no
pool at all.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable


class InlineExecutor(Executor):
    """An executor that runs each call at once in this process: `map`, `submit` and
    `as_completed` behave as with a pool of one worker, errors included."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # handed to the caller by future.result(), as a pool does
            future.set_exception(e)
        return future


def start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def process_pool(jobs: int, initializer: Callable | None = None, initargs: tuple = ()) -> Executor:
    """`jobs` worker processes (at least one), or this process when `jobs` is 1. The callables
    and arguments handed to it must be picklable (module-level functions), as for any pool."""
    if jobs <= 1:
        if initializer is not None:
            initializer(*initargs)
        return InlineExecutor()
    return ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(start_method()),
                               initializer=initializer, initargs=initargs)
