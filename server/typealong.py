"""The typing-along cache: the answer to the next keystrokes is often already known.

After the model answers at a cursor, the candidates are kept with the text they
were computed on.  When the user then types characters at that cursor and
nothing else changed, every candidate that still extends what is now typed is
still a valid answer (same expression start, same code on both sides), so the
request is answered from here without running the model.  The same holds for a
second request at the same place and version (editors ask for completion and
inline completion together).  A candidate that is now fully typed is dropped; if
none is left, the model runs again.
"""
from __future__ import annotations

from dataclasses import dataclass

from anycode.model.completer import Candidate


@dataclass
class _Entry:
    source: bytes
    cursor: int
    cands: list[Candidate]


class TypeAlongCache:
    def __init__(self):
        self._entries: dict[str, _Entry] = {}

    def store(self, uri: str, source: bytes, cursor: int, cands: list[Candidate]) -> None:
        # Candidates that replace exactly [start, cursor) can be carried along; those that also
        # replace text after the cursor (a bracket the editor closed) answer the same request again.
        keep = [c for c in cands if c.start <= cursor <= c.end]
        if keep:
            self._entries[uri] = _Entry(source, cursor, keep)
        else:
            self._entries.pop(uri, None)

    def drop(self, uri: str) -> None:
        self._entries.pop(uri, None)

    def lookup(self, uri: str, source: bytes, cursor: int) -> list[Candidate] | None:
        """Candidates still valid at `cursor` in `source`, or None (run the model)."""
        e = self._entries.get(uri)
        if e is None:
            return None
        k = cursor - e.cursor  # bytes typed since
        if k < 0 or len(source) != len(e.source) + k:
            return None
        old = memoryview(e.source)   # compared in place: a large buffer is not copied
        if not (source.startswith(old[:e.cursor]) and source.endswith(old[e.cursor:])):
            return None
        out = []
        for c in e.cands:
            if c.end > e.cursor:
                if k == 0:
                    out.append(c)
                continue
            typed = source[c.start:cursor]
            text = c.text.encode("utf-8", "surrogatepass")
            if len(text) > len(typed) and text.startswith(typed):
                out.append(Candidate(c.text, c.logprob, c.start, cursor))
        return out or None
