"""The model host: the completer the server answers with, its state while it loads, and the one
worker thread every completion runs in (the completer is not thread safe).

The server (lsp.py, `AnycodeServer.load_model`) drives the load and reports it; the scheduler
(jobs.py) runs completions on `executor`.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from anycode.grammars import Language
from anycode.model.completer import Completer
from anycode.server.settings import Settings

Factory = Callable[[Settings], Completer]


class ModelHost:
    """The completer, its loading and its one worker thread."""

    def __init__(self, factory: Factory | None = None):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anycode-model")
        # loads while the interim completer serves from the worker
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anycode-load")
        self.factory = factory or runtime_completer
        # a quick completer to serve while the factory's loads (None: wait for it); a factory from
        # the testing hook may carry its own as `factory.interim`
        self.interim: Factory | None = getattr(factory, "interim", None) if factory else runtime_interim
        self.completer: Completer | None = None
        self.state = "loading"
        self.message = ""
        self.key: tuple | None = None
        self.generation = 0
        self.interim_serving = False  # "ready" on the interim completer; the full one still loads
        self.ready = asyncio.Event()  # set when state is no longer "loading"

    @property
    def device(self) -> str:
        return "" if self.completer is None else str(self.completer.device or "")

    def serves(self, lang: Language) -> bool:
        """May the completer answer for documents of `lang` (the language its model directory
        records)?  While no model is loaded, yes: the request waits for the model and asks again."""
        return self.completer is None or self.completer.lang == lang

    async def wait_ready(self, until: float, cancelled: Callable[[], bool] = lambda: False) -> bool:
        """Is a completer ready?  While the model loads, wait for it until `until` (time.monotonic())
        or until `cancelled()` (looked at every 50 ms)."""
        while self.state == "loading" and not cancelled():
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.ready.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                pass
        return self.state == "ready" and self.completer is not None

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.loader.shutdown(wait=False, cancel_futures=True)


def runtime_completer(s: Settings) -> Completer:
    if s.model != "slm":
        from anycode.model import baseline_runtime
        return baseline_runtime.BaselineCompleter(s.model, s.modelPath, s.device, s.threads)
    from anycode.model import runtime  # onnxruntime comes in here, in the worker thread
    return runtime.Completer(model_dir=s.modelPath or None, device=s.device, threads=s.threads)


def runtime_interim(s: Settings) -> Completer | None:
    """Where the model will load on the GPU (seconds: float graphs, CUDA graphs captured), the CPU
    one to answer with meanwhile (a fraction of a second); None where the CPU is all there is."""
    if s.device == "cpu" or s.model != "slm":
        return None
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    from anycode.model import runtime
    return runtime.Completer(model_dir=s.modelPath or None, device="cpu", threads=s.threads)
