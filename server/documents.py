"""Open documents as the server keeps them: UTF-8 bytes, a line index, a version
and a tree-sitter tree that follows the edits.

LSP positions are (line, character) where the character unit is the negotiated
position encoding: UTF-16 code units (the default), UTF-8 bytes or code points
(UTF-32).  Everything inside the server works in byte offsets into the UTF-8
text; `Document.offset_at` and `Document.position_at` convert at the edges.

Lines end at "\\n" ("\\r\\n" counts as one line end; a lone "\\r" does not end a
line, editors normalise it away).  The line index is an array of line starts,
replaced (never changed in place) by each edit, so a snapshot can keep the one
of its version; converting a position costs a binary search, not a scan.
Incremental changes splice the bytes, patch the line index and `tree.edit` the
old tree; the tree is reparsed, with the edited old tree, the first time someone
asks for it at a new version, so a document is parsed at most once per version
however many changes arrive.

A document over `WHOLE_PARSE_BYTES` is never parsed whole: `region` is the
top-level block around a cursor (the one the completer reads, holes.window) and
`region_tree` parses that block alone, so the work per request depends on the
block, not on the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tree_sitter as ts

from anycode import grammars
from anycode.grammars import Language
from anycode.model import holes

WHOLE_PARSE_BYTES = holes.MAX_PARSE_BYTES   # larger documents are parsed a top-level block at a time

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)

SURROGATES = "surrogatepass"  # JSON may carry lone surrogates; keep them byte-reversible


def encode(text: str) -> bytes:
    return text.encode("utf-8", SURROGATES)


def decode(data: bytes) -> str:
    return data.decode("utf-8", SURROGATES)


def _units(text: str, encoding: str) -> int:
    """Length of `text` in position units."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF16:
        return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)
    return len(encode(text))


def _bytes_for_units(line: bytes, units: int, encoding: str) -> int:
    """Byte length of the longest prefix of `line` that is at most `units` long."""
    if encoding == UTF8:
        n = min(units, len(line))
        while 0 < n < len(line) and (line[n] & 0xC0) == 0x80:  # inside a multi-byte char
            n -= 1
        return n
    if line.isascii():
        return min(units, len(line))
    nbytes = count = 0
    for c in decode(line):
        w = 2 if encoding == UTF16 and ord(c) > 0xFFFF else 1
        if count + w > units:
            break
        count += w
        nbytes += len(encode(c))
    return nbytes


@dataclass
class Document:
    uri: str
    text: bytes
    version: int
    language_id: str = ""

    def __post_init__(self):
        # the document's language: by its languageId, else its file suffix; None: no language anycode knows
        self.lang: Language | None = grammars.for_language_id(self.language_id, self.uri)
        self.line_starts = _line_starts(self.text)
        self._tree: ts.Tree | None = None
        self._tree_version: int | None = None
        self._region: tuple[int, int, int, ts.Tree] | None = None   # (version, lo, hi, tree) of region_tree
        self.parses = 0  # how many times tree-sitter ran on this document
        self.parsed_max = 0  # the most bytes it ran on at once
        self.closed = False

    @classmethod
    def from_text(cls, uri: str, text: str, version: int, language_id: str = ""):
        return cls(uri, encode(text), version, language_id)

    def is_stale(self, version: int) -> bool:
        return self.closed or self.version != version

    # ------------------------------------------------------------ positions

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Byte range of a line's content, without its line end."""
        start = int(self.line_starts[line])
        if line + 1 < len(self.line_starts):
            end = int(self.line_starts[line + 1]) - 1
            if end > start and self.text[end - 1] == 0x0D:  # \r\n
                end -= 1
        else:
            end = len(self.text)
        return start, end

    def offset_at(self, line: int, character: int, encoding: str = UTF16, *,
                  clamp: bool = False) -> int | None:
        """Byte offset of an LSP position, or None when it lies outside the document
        (clamp=True: the nearest offset inside it, as the spec asks for edits)."""
        if line < 0 or character < 0:
            if not clamp:
                return None
            line, character = max(line, 0), max(character, 0)
        if line >= len(self.line_starts):
            return len(self.text) if clamp else None
        start, end = self.line_bounds(line)
        content = self.text[start:end]
        n = _bytes_for_units(content, character, encoding)
        if n == len(content) and character > _units(decode(content), encoding) and not clamp:
            return None
        return start + n

    def position_at(self, offset: int, encoding: str = UTF16) -> tuple[int, int]:
        return position_in(self.text, offset, encoding, self.line_starts)

    def point_at(self, offset: int) -> tuple[int, int]:
        """tree-sitter point: (row, byte column)."""
        line = int(np.searchsorted(self.line_starts, offset, "right")) - 1
        return line, offset - int(self.line_starts[line])

    # ------------------------------------------------------------ changes

    def apply_change(self, start_pos: tuple[int, int] | None, end_pos: tuple[int, int] | None,
                     new_text: str, encoding: str = UTF16) -> tuple[int, int, int]:
        """Apply one content change (range None: the whole document).  Returns the
        byte range it replaced and the length of what went in.  The version is the
        caller's to set, once per didChange.  A whole-document change is narrowed
        to the bytes that differ, so the tree and the line index follow it
        incrementally as well."""
        new = encode(new_text)
        if start_pos is None or end_pos is None:
            old = self.text
            p = _common_prefix(old, new)
            q = _common_prefix(old[p:][::-1], new[p:][::-1]) if p < min(len(old), len(new)) else 0
            return self.splice(p, len(old) - q, new[p:len(new) - q])
        start = self.offset_at(*start_pos, encoding, clamp=True)
        end = self.offset_at(*end_pos, encoding, clamp=True)
        if end < start:
            start, end = end, start
        return self.splice(start, end, new)

    def splice(self, start: int, end: int, new: bytes) -> tuple[int, int, int]:
        """Replace bytes [start, end) with `new`: the text, the line index, the tree's edit."""
        if self._tree is not None and len(self.text) + len(new) - (end - start) > WHOLE_PARSE_BYTES:
            self._tree = None      # too large to parse whole from now on
        if self._tree is not None:
            start_point, old_end_point = self.point_at(start), self.point_at(end)
            nl = new.rfind(b"\n")
            if nl < 0:
                new_end_point = (start_point[0], start_point[1] + len(new))
            else:
                new_end_point = (start_point[0] + new.count(b"\n"), len(new) - nl - 1)
            self._tree.edit(start_byte=start, old_end_byte=end, new_end_byte=start + len(new),
                            start_point=start_point, old_end_point=old_end_point,
                            new_end_point=new_end_point)
        old = memoryview(self.text)
        self.text = b"".join((old[:start], new, old[end:]))   # one copy, not three
        # Patch the line index: drop the line starts the old text made inside the
        # range, add the new text's, shift the rest.
        starts = self.line_starts
        lo = int(np.searchsorted(starts, start, "right"))
        hi = int(np.searchsorted(starts, end, "right"))
        delta = len(new) - (end - start)
        added = _newlines(new) + (start + 1)
        self.line_starts = np.concatenate([starts[:lo], added, starts[hi:] + delta])
        return start, end, len(new)

    # ------------------------------------------------------------ syntax

    def tree(self, parser: ts.Parser) -> ts.Tree:
        """The tree for the current version: parsed once per version, reusing the
        edited tree of the version before."""
        if self._tree is None or self._tree_version != self.version:
            self._tree = parser.parse(self.text, self._tree) if self._tree is not None \
                else parser.parse(self.text)
            self._tree_version = self.version
            self.parses += 1
            self.parsed_max = max(self.parsed_max, len(self.text))
        return self._tree

    @property
    def parsed_whole(self) -> bool:
        """Is the document small enough to be parsed whole?"""
        return len(self.text) <= WHOLE_PARSE_BYTES

    def region(self, offset: int) -> tuple[int, int]:
        """The bytes parsed for a request at `offset`: all of them, or the top-level block."""
        if self.parsed_whole:
            return 0, len(self.text)
        return holes.window(self.text, offset, self.lang)

    def region_tree(self, parser: ts.Parser, offset: int) -> tuple[int, ts.Tree]:
        """(where it starts, the tree of `region(offset)` parsed alone); the last one is kept."""
        if self.parsed_whole:
            return 0, self.tree(parser)
        lo, hi = self.region(offset)
        r = self._region
        if r is None or r[:3] != (self.version, lo, hi):
            r = self._region = (self.version, lo, hi, parser.parse(self.text[lo:hi]))
            self.parses += 1
            self.parsed_max = max(self.parsed_max, hi - lo)
        return lo, r[3]

    def in_comment(self, parser: ts.Parser, offset: int) -> bool:
        """True when `offset` lies inside a comment (no expression can go there)."""
        if offset == 0:
            return False
        lo, tree = self.region_tree(parser, offset)
        node = tree.root_node.descendant_for_byte_range(offset - 1 - lo, offset - lo)
        return node is not None and node.type == self.lang.COMMENT and node.start_byte + lo < offset


def position_in(text: bytes, offset: int, encoding: str = UTF16,
                line_starts: np.ndarray | None = None) -> tuple[int, int]:
    """(line, character) of a byte offset in UTF-8 text, through its line index when given
    (a binary search) or by counting line ends (a scan of the text before it)."""
    offset = _char_start(text, offset)
    if line_starts is None:
        line_start = text.rfind(b"\n", 0, offset) + 1
        return text.count(b"\n", 0, line_start), _column(text[line_start:offset], encoding)
    line = int(np.searchsorted(line_starts, offset, "right")) - 1
    return line, _column(text[int(line_starts[line]):offset], encoding)


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (binary search over memcmp'd slices)."""
    lo, hi = 0, min(len(a), len(b))
    va, vb = memoryview(a), memoryview(b)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if va[lo:mid] == vb[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _char_start(text: bytes, offset: int) -> int:
    """`offset` clamped to the text and moved back to the start of its character."""
    offset = max(0, min(offset, len(text)))
    while offset < len(text) and (text[offset] & 0xC0) == 0x80:
        offset -= 1
    return offset


def _column(prefix: bytes, encoding: str) -> int:
    return len(prefix) if encoding == UTF8 else _units(decode(prefix), encoding)


def _newlines(data: bytes) -> np.ndarray:
    """Offsets of the line ends in `data`."""
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A).astype(np.int64)


def _line_starts(text: bytes) -> np.ndarray:
    return np.concatenate([np.zeros(1, np.int64), _newlines(text) + 1])

