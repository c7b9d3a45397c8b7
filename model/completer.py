"""What the language server asks of a completer, and the candidate it answers with.

`runtime.Completer` (ONNX Runtime and the shipped model) is the completer; a factory given to
`anycode serve --completer MODULE:FACTORY` (a debugging and testing hook) returns one too.  This
module imports nothing heavy, so that the server can name these types before a model loads.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Protocol

from anycode.grammars import Language


class Candidate(NamedTuple):
    """An answer: `text` replaces bytes `start`..`end` of the request's source; `logprob` ranks it."""
    text: str
    logprob: float
    start: int
    end: int

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


class Completer(Protocol):
    device: str           # where the model runs ("cpu", "cuda"), for the status
    lang: Language        # the language the model was trained on: it answers documents of that language
    note: str             # a warning on how the model runs ("" when there is none)

    def complete(self, source: bytes, cursor: int, *, uri: str = "", version: int = 0, beam_size: int = 5,
                 max_items: int = 5, deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                 prior: tuple[bytes, object] | None = None) -> list[Candidate]:
        """Ranked candidates at byte offset `cursor` of `source`; raises on `cancelled()` (checked between
        search steps), ends early at `deadline` (time.monotonic())."""
        ...

    def close_document(self, uri: str) -> None:
        """Forget what is kept for the document (its caches)."""
        ...

    def counters(self) -> dict:
        """Cache counters for the server's anycode/stats (JSON-ready)."""
        ...
