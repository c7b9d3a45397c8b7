"""Open documents as the server keeps them: UTF-8 bytes, a line index, a version
and a tree-sitter tree that follows the edits.

LSP positions are (line, character) where the character unit is the negotiated
position encoding: UTF-16 code units (the default), UTF-8 bytes or code points
(UTF-32).  Everything inside the server works in byte offsets into the UTF-8
text; `Document.offset_at` and `Document.position_at` convert at the edges.

Lines end at "\\n" ("\\r\\n" counts as one line end; a lone "\\r" does not end a
line, editors normalise it away).  Incremental changes splice the bytes, patch
the line index and `tree.edit` the old tree; the tree is reparsed, with the
edited old tree, the first time someone asks for it at a new version, so a
document is parsed at most once per version however many changes arrive.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import tree_sitter as ts

from anycode.grammars import python as grammar

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
    language_id: str = "python"

    def __post_init__(self):
        self.line_starts = _line_starts(self.text)
        self._tree: ts.Tree | None = None
        self._tree_version: int | None = None
        self.parses = 0  # how many times tree-sitter ran on this document
        self.closed = False

    @classmethod
    def from_text(cls, uri: str, text: str, version: int, language_id: str = "python"):
        return cls(uri, encode(text), version, language_id)

    def is_stale(self, version: int) -> bool:
        return self.closed or self.version != version

    # ------------------------------------------------------------ positions

    @property
    def line_count(self) -> int:
        return len(self.line_starts)

    def line_bounds(self, line: int) -> tuple[int, int]:
        """Byte range of a line's content, without its line end."""
        start = self.line_starts[line]
        if line + 1 < len(self.line_starts):
            end = self.line_starts[line + 1] - 1
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
        offset = _char_start(self.text, offset)
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line, _column(self.text[self.line_starts[line]:offset], encoding)

    def point_at(self, offset: int) -> tuple[int, int]:
        """tree-sitter point: (row, byte column)."""
        line = bisect.bisect_right(self.line_starts, offset) - 1
        return line, offset - self.line_starts[line]

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
        self.text = self.text[:start] + new + self.text[end:]
        # Patch the line index: drop the line starts the old text made inside the
        # range, add the new text's, shift the rest.
        lo = bisect.bisect_right(self.line_starts, start)
        hi = bisect.bisect_right(self.line_starts, end)
        delta = len(new) - (end - start)
        added = []
        i = new.find(b"\n")
        while i >= 0:
            added.append(start + i + 1)
            i = new.find(b"\n", i + 1)
        tail = self.line_starts[hi:]
        if delta:
            tail = [p + delta for p in tail]
        self.line_starts[lo:] = added + tail
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
        return self._tree

    def in_comment(self, parser: ts.Parser, offset: int) -> bool:
        """True when `offset` lies inside a comment (no expression can go there)."""
        if offset == 0:
            return False
        node = self.tree(parser).root_node.descendant_for_byte_range(offset - 1, offset)
        return node is not None and node.type == "comment" and node.start_byte < offset


def position_in(text: bytes, offset: int, encoding: str = UTF16) -> tuple[int, int]:
    """(line, character) of a byte offset in any UTF-8 text (no line index: O(n))."""
    offset = _char_start(text, offset)
    line_start = text.rfind(b"\n", 0, offset) + 1
    return text.count(b"\n", 0, line_start), _column(text[line_start:offset], encoding)


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


def _line_starts(text: bytes) -> list[int]:
    starts = [0]
    i = text.find(b"\n")
    while i >= 0:
        starts.append(i + 1)
        i = text.find(b"\n", i + 1)
    return starts


def new_parser() -> ts.Parser:
    return grammar.new_parser()
