"""Where the cursor is a hole: the tree and hole node the model completes, as the dataset builds them.

`find_hole(source, cursor)`:

1. A placeholder identifier goes in at the cursor.  A buffer with a missing
   expression rarely parses (`x = |`); with the placeholder it usually does.
   Typed identifier characters on both sides merge into it (`params.it|ems`).
   When the placeholder still lands in an ERROR node (an unclosed bracket or a
   header without its colon: `foo(|`, `if a ==|`), closers are appended after
   it -- the brackets left open before it, then `:`, then `: pass` -- until it
   does not.  Parsing is incremental from the previous request's tree when one is
   given (`prev`): the buffer-with-placeholder of consecutive requests differ by
   a few bytes, one `Tree.edit` + `Parser.parse(new, old_tree)`.
2. The hole is the innermost expression that ends at the placeholder, starts
   on the cursor's line, and sits at an expression position (the dataset's rule,
   `dataset.is_hole_position`, and the grammar table: the parent must have had
   expressions at that child index): the placeholder itself (`x = |`,
   `a + |`), or what holds it where it cannot stand alone (`params.it|`: an
   attribute's name is no expression, the attribute is).  What the user typed
   of it, hole start to cursor, is the *typed prefix*: candidates must start
   with it, and replace hole start .. cursor (.. the end of the word, when the
   cursor is inside one).
3. The context is the enclosing function, as in training (the innermost
   `function_definition`), else the enclosing top-level statement; above
   `MAX_CONTEXT_BYTES` the largest enclosing node under the cap.
4. It returns None, fast, where no expression can go: inside a comment or a
   string, a name being defined (`def |`, `for | in`, `import |`), a statement
   of its own (the dataset has no statement-level targets), or no parse.

Buffers over `MAX_PARSE_BYTES` are not parsed whole: the top-level block around
the cursor (`Language.starts_block` delimits it), at most `WINDOW_BYTES` each side, is.

Everything language-specific (node types, name positions, repairs, which types may be a hole's
root, typed tokens) comes from the `Language` given as `lang`.

The tree carries the buffer's identifier counts (`FlatTree.file_identifiers`), the
copy source of models with file tokens; `IdentifierCounts` recounts only the part
inside the context while the rest of the buffer stays as it was.

`Hole.verify(text)` re-parses the top-level statement around the hole with a candidate in
it (incremental, from that statement's tree, parsed once per hole) and says whether it
parses there as the tree that was generated.  Top-level statements parse alone (where the
language's do, as Python's) as they do in their module, and re-parsing the whole buffer cost up to 90 ms a candidate
in long files (thousands of top-level statements: every one is revisited).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tree_sitter as ts

from anycode.grammars import Language, Node
from anycode.model.paths import FlatTree

PLACEHOLDER = b"__anycode_hole__"
MAX_TYPED_CHARS = 120          # the dataset's longest target
MAX_CONTEXT_BYTES = 24_000     # about 600 lines
MAX_PARSE_BYTES = 2_000_000
WINDOW_BYTES = 200_000
FIELD_WINDOW_BYTES = 20_000    # either side of an f-string field, to find the literals written with it
# typed starts of at least this many tokens search the operand at the cursor first (an empty one, or a
# whole literal or call at the end of the start), the whole expression as its fallback
LONG_START_TOKENS = 4
MAX_TREE_DEPTH = 400

_WORD = re.compile(rb"\w")
ERROR = "ERROR"                # tree-sitter's node for what does not parse, in every grammar


@dataclass
class Hole:
    tree: FlatTree             # the context, with the hole's node at `h`
    h: int
    start: int                 # byte range of `source` the candidates replace
    end: int
    cursor: int
    typed: str                 # source[start:cursor]
    # the buffer (or window) with the placeholder, as parsed: what candidates are verified in
    ph_source: bytes
    ph_tree: ts.Tree
    hole_range: tuple[int, int]          # the hole in ph_source
    parent_types: tuple[str, ...]        # tree-sitter types from the hole's parent up to the context root
    context_range: tuple[int, int]       # the context root in ph_source
    offset: int = 0                      # where ph_source's window starts in source
    repaired: str = ""                   # closers appended after the placeholder
    incremental: bool = False            # parsed from the previous tree
    stats: dict = field(default_factory=dict)
    window: tuple[int, int] | None = None  # the top-level statement around the hole in ph_source; None: all
    lead: str = ""                       # typed text before the hole's own start that the answer repeats
    closers: str = ""                    # what closes `lead`: the answer adds it (the range covers those present)
    fallback: Hole | None = None         # searched when this hole's search answers nothing (the operand's hole)
    typed_type: str = ""                 # the type of the expression `typed` starts, as its parse has it
    lang: Language | None = field(default=None, repr=False)   # the buffer's language
    _window_tree: ts.Tree | None = field(default=None, repr=False)

    def verify(self, text: str, node: Node | None, parser: ts.Parser) -> bool:
        """Does the buffer parse with `text` in the hole, as `node` (when given) at the hole's position?"""
        w0, w1 = self.window or (0, len(self.ph_source))
        src = self.ph_source[w0:w1]
        if self._window_tree is None:
            self._window_tree = self.ph_tree if self.window is None else parser.parse(src)
        a, b = self.hole_range[0] - w0, self.hole_range[1] - w0
        data = text.encode("utf8")
        new = src[:a] + data + src[b:]
        t = self._window_tree.copy()
        _edit(t, src, new, a, b, a + len(data))
        tree = parser.parse(new, t)
        n = tree.root_node.descendant_for_byte_range(a, a + len(data))
        # the nodes spanning exactly the text, innermost first: the expression is one of them, and
        # wrappers of the same span may sit above it (`with fn():` has a with_item and a with_clause)
        spans = []
        while n is not None and n.start_byte == a and n.end_byte == a + len(data) and n.type not in self.lang.STOP_TYPES:
            spans.append(n)
            n = n.parent
        return any(self._is_hole_node(n, node) for n in spans)

    def _is_hole_node(self, n: ts.Node, node: Node | None) -> bool:
        if n.has_error or not n.is_named:
            return False
        up, q = [], n.parent
        while q is not None and len(up) < len(self.parent_types):
            if q.type == ERROR:
                return False
            up.append(q.type)
            q = q.parent
        if tuple(up) != self.parent_types:
            return False
        if node is None:
            return True
        try:
            return self.lang.convert(n).shape() == node.shape()
        except RecursionError:
            return False


# ---------------------------------------------------------------- byte and point arithmetic


def point_at(src: bytes, off: int) -> tuple[int, int]:
    row = src.count(b"\n", 0, off)
    return row, off - (src.rfind(b"\n", 0, off) + 1)


def _edit(tree: ts.Tree, old: bytes, new: bytes, start: int, old_end: int, new_end: int) -> None:
    tree.edit(start_byte=start, old_end_byte=old_end, new_end_byte=new_end,
              start_point=point_at(old, start), old_end_point=point_at(old, old_end),
              new_end_point=point_at(new, new_end))


def diff_range(old: bytes, new: bytes) -> tuple[int, int, int]:
    """(start, old_end, new_end): the one edit that turns `old` into `new`."""
    n = min(len(old), len(new))
    a = np.frombuffer(old, np.uint8, n)
    b = np.frombuffer(new, np.uint8, n)
    neq = np.flatnonzero(a != b)
    prefix = int(neq[0]) if len(neq) else n
    m = n - prefix
    if m:
        ta = np.frombuffer(old, np.uint8)[len(old) - m:][::-1]
        tb = np.frombuffer(new, np.uint8)[len(new) - m:][::-1]
        neq = np.flatnonzero(ta != tb)
        suffix = int(neq[0]) if len(neq) else m
    else:
        suffix = 0
    return prefix, len(old) - suffix, len(new) - suffix


def parse(src: bytes, parser: ts.Parser, prev: tuple[bytes, ts.Tree] | None) -> tuple[ts.Tree, bool]:
    """Parse `src`, incrementally from `prev` = (its source, its tree) when given."""
    if prev is None:
        return parser.parse(src), False
    old_src, old_tree = prev
    if old_src == src:
        return old_tree, True
    start, old_end, new_end = diff_range(old_src, src)
    t = old_tree.copy()
    _edit(t, old_src, src, start, old_end, new_end)
    return parser.parse(src, t), True


def window(source: bytes, cursor: int, lang: Language, limit: int = WINDOW_BYTES) -> tuple[int, int]:
    """The top-level block around the cursor: from the last line at or before the cursor's line that
    starts a top-level statement (`lang.starts_block`) to the next one after it, at most `limit` bytes
    each side."""
    lo_bound = max(0, cursor - limit)
    hi_bound = min(len(source), cursor + limit)
    line_start = source.rfind(b"\n", 0, cursor) + 1
    lo = line_start
    while lo > lo_bound:
        if lang.starts_block(source, lo):
            break
        lo = source.rfind(b"\n", 0, max(lo - 1, 0)) + 1
        if lo == 0:
            break
    lo = max(lo, lo_bound)
    hi = source.find(b"\n", cursor)
    hi = len(source) if hi < 0 else hi + 1
    while hi < hi_bound:
        if lang.starts_block(source, hi):
            break
        nxt = source.find(b"\n", hi)
        hi = hi_bound if nxt < 0 else nxt + 1
    return lo, min(hi, hi_bound)


# ---------------------------------------------------------------- the hole


def _named_index(node: ts.Node, lang: Language) -> tuple[int, str]:
    """(index among the parent's children the model sees, field name)."""
    parent = node.parent
    k = 0
    for i, c in enumerate(parent.children):
        if c.id == node.id:
            return k, parent.field_name_for_child(i) or ""
        if c.is_named and c.type not in lang.DROPPED:
            k += 1
    return k, ""


def expression_position(node: ts.Node, table, lang: Language) -> bool:
    """May an expression (a dataset target) stand where `node` is?"""
    parent = node.parent
    if parent is None:
        return False
    ptype = parent.type
    if ptype == lang.STATEMENT or ptype == ERROR:
        return False
    index, fld = _named_index(node, lang)
    if (ptype, fld) in lang.HOLE_FORBIDDEN or (ptype, "") in lang.HOLE_FORBIDDEN:
        return False
    if table is not None:
        key = lang.type_key(parent)
        if not table.known(key):
            return False
        return any(lang.target_root_type(t) for t in table.allowed_children(key, index))
    return (ptype, fld) not in lang.NAME_POSITIONS and (ptype, "") not in lang.NAME_POSITIONS


def _open_brackets(root: ts.Node, lo: int, hi: int, lang: Language) -> str:
    """Closers for the brackets left open among the tokens in [lo, hi)."""
    stack: list[str] = []
    todo = [root]
    while todo:
        n = todo.pop()
        if n.end_byte <= lo or n.start_byte >= hi:
            continue
        if n.child_count == 0:
            t = n.type
            if t in lang.OPEN_CLOSE:
                stack.append(lang.OPEN_CLOSE[t])
            elif stack and stack[-1] == t:
                stack.pop()
            continue
        todo.extend(reversed(n.children))
    return "".join(reversed(stack))


def _placeholder_node(tree: ts.Tree, at: int, lang: Language) -> ts.Node | None:
    """The identifier holding the placeholder at byte `at`, or None (comment, string, garbage)."""
    n = tree.root_node.descendant_for_byte_range(at, at + len(PLACEHOLDER))
    if n is None or n.type != lang.IDENTIFIER:
        return None
    return n


def _under_error(n: ts.Node) -> ts.Node | None:
    q = n.parent
    while q is not None:
        if q.type == ERROR:
            return q
        q = q.parent
    return None


class IdentifierCounts:
    """Language.identifier_counts of a whole buffer, with the counts outside the context kept
    for the next request of the same document (typing inside a function leaves them as they are)."""

    def __init__(self):
        self.key = None
        self.outside: tuple[list, list] = ([], [])

    def __call__(self, tree: ts.Tree, source: bytes, lo: int, hi: int, lang: Language) -> list[tuple[str, int]]:
        key = (lo, len(source) - hi, hash(source[:lo]), hash(source[hi:]))
        if key != self.key:
            root = tree.root_node
            self.outside = (lang.identifier_counts(root, 0, lo), lang.identifier_counts(root, hi, len(source)))
            self.key = key
        inside = lang.identifier_counts(tree.root_node, lo, hi)
        merged: dict[str, int] = {}
        for part in (self.outside[0], inside, self.outside[1]):
            for name, n in part:
                merged[name] = merged.get(name, 0) + n
        return list(merged.items())


def find_hole(source: bytes, cursor: int, *, lang: Language, parser: ts.Parser | None = None, table=None,
              prev: tuple[bytes, ts.Tree] | None = None, identifiers: IdentifierCounts | None = None) -> Hole | None:
    """The hole at `cursor` (a byte offset) in `source`, a buffer of language `lang`, or None where no
    expression can go.

    `table`: a GrammarTable (expression positions); `prev`: (ph_source, ph_tree) of an
    earlier hole of the same document, to parse incrementally; `identifiers`: the document's
    IdentifierCounts (a fresh one when None)."""
    if not isinstance(source, (bytes, bytearray)):
        raise TypeError("source must be bytes")
    if not 0 <= cursor <= len(source):
        raise ValueError(f"cursor {cursor} is outside the buffer of {len(source)} bytes")
    source = bytes(source)
    parser = parser or lang.new_parser()
    if len(source) > MAX_PARSE_BYTES:
        lo, hi = window(source, cursor, lang)
        hole = find_hole(source[lo:hi], cursor - lo, lang=lang, parser=parser, table=table, identifiers=identifiers)
        if hole is not None:
            hole.offset = lo
            hole.start += lo
            hole.end += lo
            hole.cursor += lo
        return hole
    loc = next(_placeholder_parses(source, cursor, parser, prev, lang), None)
    if loc is None:
        return None
    return _hole_at(source, cursor, loc, table, identifiers, lang)


@dataclass
class _Located:
    """The buffer with the placeholder at the cursor, parsed (and repaired where it had to be)."""
    end: int                   # the end of the word the cursor is in (the placeholder replaces its rest)
    ph_source: bytes
    tree: ts.Tree
    ph: ts.Node
    repaired: str
    incremental: bool


def _placeholder_parses(source: bytes, cursor: int, parser: ts.Parser, prev, lang: Language):
    """The buffer with the placeholder at the cursor, parsed; where the placeholder lands in an error,
    each repair (closers appended after it) that takes it out of the error, likeliest first."""
    # typed word characters before the cursor merge with the placeholder; after it, they are replaced
    end = cursor
    while end < len(source) and _WORD.match(source, end) and end - cursor < 256:
        end += 1
    base = source[:cursor] + PLACEHOLDER + source[end:]
    tree, incremental = parse(base, parser, prev)
    ph = _placeholder_node(tree, cursor, lang)
    if ph is None:
        return
    err = _under_error(ph)
    if err is None:
        yield _Located(end, base, tree, ph, "", incremental)
        return
    closers = _open_brackets(err, err.start_byte, cursor, lang)
    # the error may span brackets the buffer closes later: fewer closers first, then all of them
    tries = [closers[:k] for k in range(len(closers) + 1)]
    tries = [c + x for x in ("",) + lang.REPAIRS for c in tries]
    for extra in dict.fromkeys(tries):
        if not extra:
            continue
        cand = base[: cursor + len(PLACEHOLDER)] + extra.encode() + base[cursor + len(PLACEHOLDER):]
        t2, _ = parse(cand, parser, (base, tree))
        ph2 = _placeholder_node(t2, cursor, lang)
        if ph2 is not None and _under_error(ph2) is None:
            yield _Located(end, cand, t2, ph2, extra, incremental)


def _hole_at(source: bytes, cursor: int, loc: _Located, table, identifiers, lang: Language) -> Hole | None:
    """The hole find_hole returns, from the placeholder's parse."""
    end, ph_source, tree, ph, repaired, incremental = (loc.end, loc.ph_source, loc.tree, loc.ph, loc.repaired,
                                                         loc.incremental)
    ph_end = cursor + len(PLACEHOLDER)
    line_start = source.rfind(b"\n", 0, cursor) + 1
    # the innermost expression ending at the placeholder, on the cursor's line, at an expression position
    best = None
    n = ph
    while n is not None and n.end_byte == ph_end and n.type not in lang.STOP_TYPES:
        if n.start_byte >= line_start and cursor - n.start_byte <= MAX_TYPED_CHARS and n.is_named and (
                n.type == lang.IDENTIFIER or lang.base_type(lang.type_key(n)) in lang.EXPRESSION_TYPES) \
                and expression_position(n, table, lang):
            best = n
            break
        n = n.parent
    if best is None:
        return None
    # inside a literal (an f-string's braces): the model's tree has no node there
    q = best.parent
    while q is not None:
        if q.type in lang.VALUED or q.type in lang.FIXED:
            return None
        q = q.parent
    # the context: the enclosing function, else the top-level statement; capped
    chain = []
    q = best.parent
    while q is not None and q.type != lang.ROOT:
        chain.append(q)
        q = q.parent
    if not chain:
        return None
    ctx = next((c for c in chain if c.type in lang.FUNCTION_TYPES), chain[-1])
    if ctx.end_byte - ctx.start_byte > MAX_CONTEXT_BYTES:
        fitting = [c for c in chain[: chain.index(ctx) + 1] if c.end_byte - c.start_byte <= MAX_CONTEXT_BYTES]
        if not fitting:
            return None
        ctx = fitting[-1]
    parent_types = tuple(c.type for c in chain[: chain.index(ctx) + 1])
    # the hole's address: named-child indices from the context root down
    address = []
    q = best
    while q.id != ctx.id:
        address.append(_named_index(q, lang)[0])
        q = q.parent
    if len(address) > MAX_TREE_DEPTH:
        return None
    try:
        flat = FlatTree.from_node(lang.convert(ctx), lang)
    except RecursionError:
        return None
    h = 0
    for k in reversed(address):
        kids = flat.children(h)
        if k >= len(kids):
            return None
        h = kids[k]
    if flat.start_byte[h] != best.start_byte or flat.end_byte[h] != best.end_byte:
        return None
    flat.file_identifiers = (identifiers or IdentifierCounts())(tree, ph_source, ctx.start_byte, ctx.end_byte, lang)
    top = best
    while top.parent is not None and top.parent.type != lang.ROOT:
        top = top.parent
    start = best.start_byte
    return Hole(
        tree=flat, h=h, start=start, end=end, cursor=cursor,
        typed=source[start:cursor].decode("utf8", "replace"),
        ph_source=ph_source, ph_tree=tree, hole_range=(start, ph_end), parent_types=parent_types,
        context_range=(ctx.start_byte, ctx.end_byte), repaired=repaired, incremental=incremental,
        window=(top.start_byte, top.end_byte), lang=lang)


# ---------------------------------------------------------------- the hole of a typed expression

_CLOSER_BYTES = frozenset(b")]}\"' \t")
_CLOSERS_AFTER = _CLOSER_BYTES - frozenset(b" \t")


def find_typed_hole(source: bytes, cursor: int, *, lang: Language, parser: ts.Parser | None = None, table=None,
                    prev: tuple[bytes, ts.Tree] | None = None,
                    identifiers: IdentifierCounts | None = None, floor: int = 0) -> Hole | None:
    """The hole of the expression the user is typing at `cursor`: like find_hole, but the hole starts
    where the expression does, and what is typed of it is taken out of the buffer (with the closers
    an editor added after the cursor for it), so the model sees the context of an empty hole and the
    search is constrained by `hole.typed` (prefix.py).  The candidates replace `hole.start` ..
    `hole.end`: the typed text, the rest of the word, and the auto-closed brackets and quotes.

    The expression typed is the innermost one at an expression position that holds the cursor and
    ends there (but for closers), starting on the cursor's line: the name or literal being typed
    (`f(a, lim|`, `retur|n`, `"abc|`), `self.|`.  Where nothing of the operand at the cursor is typed
    (`self.items[|`, `not x and |`, `foo(a, |`), the typed text still constrains the search of the
    whole expression (`foo(` can grow to `foo(a, b)`, which one operand cannot); the hole of that
    operand alone, its answers repeating the typed text before it and closing its brackets
    (`hole.lead`, `hole.closers`), is the `fallback` searched when that search answers nothing, or the
    hole itself where the whole expression has none; after a start of `LONG_START_TOKENS` tokens or
    more (`query is not None and |`) the two swap: the operand's hole first, the whole expression its
    fallback.  So too where a long start ends in a whole operand (`"Tk" in sys.modules or "tk"|`, a
    literal or a closed call, which the typed starts do not take as the expression being typed): that
    operand's hole first, typed as itself.  `floor`: no typed expression starts before it."""
    if not isinstance(source, (bytes, bytearray)):
        raise TypeError("source must be bytes")
    if not 0 <= cursor <= len(source):
        raise ValueError(f"cursor {cursor} is outside the buffer of {len(source)} bytes")
    source = bytes(source)
    parser = parser or lang.new_parser()
    if len(source) > MAX_PARSE_BYTES:
        lo, hi = window(source, cursor, lang)
        hole = find_typed_hole(source[lo:hi], cursor - lo, lang=lang, parser=parser, table=table,
                               identifiers=identifiers)
        for h in (hole, hole and hole.fallback):
            if h is not None:
                h.offset += lo
                h.start += lo
                h.end += lo
                h.cursor += lo
        return hole
    line_start = max(source.rfind(b"\n", 0, cursor) + 1, floor)
    line = source[line_start:cursor].decode("utf8", "replace")
    line_end = source.find(b"\n", cursor)
    rest = source[cursor:len(source) if line_end < 0 else line_end].decode("utf8", "replace")
    field = lang.interpolation(line, rest)
    if field is not None:
        return _field_hole(source, cursor, line_start, line, rest, field, parser, table, prev, identifiers, lang)
    start, typed_type, first, loc, starts = None, "", None, None, []
    for how in _placements(line, lang):
        at, located = _place(source, cursor, line_start, line, how, lang)
        for loc in _placeholder_parses(located, at, parser, prev, lang):
            if how == "cursor" and first is None:
                first = loc
            starts = _typed_starts(loc, at, line_start, table, lang)
            start, typed_type = starts[0] if starts else (None, "")
            if start is not None and start < cursor:
                break
        else:
            continue
        break
    if start is None or start >= cursor:
        # nothing typed (or nothing that starts an expression): the hole at the cursor, as find_hole has
        # it, unless the typed text is glued to what follows the cursor (`super()|(config)`)
        hole = None if first is None else _hole_at(source, cursor, first, table, identifiers, lang)
        if hole is not None and _whole(hole):
            return hole
        return _glued_hole(source, cursor, line_start, line, cursor, parser, table, prev, identifiers, lang) or hole
    typed = source[start:cursor].decode("utf8", "replace")
    after = loc.end if located is source else cursor
    closers = lang.closers(typed)
    operand = None
    if located is source and loc.ph.start_byte == cursor and expression_position(loc.ph, table, lang):
        # nothing typed of the operand at the cursor (`f(a, |`, `x and |`, `res[|`): its own hole is
        # the fallback.  Not where one operand does not finish the expression (`a if |` needs its
        # `else`, `x not |` its `in`)
        if lang.parse_expression(typed + lang.OPERAND + closers, parser) is not None:
            operand = _operand_hole(source, cursor, start, after, loc, closers, parser, table, prev, identifiers, lang)
    hole = _expression_hole(source, cursor, starts, after, parser, table, prev, identifiers, lang)
    if hole is None or not _whole(hole):
        glued = _glued_hole(source, cursor, line_start, line, after, parser, table, prev, identifiers, lang)
        if glued is not None:
            hole, operand = glued, operand if operand is not None and _whole(operand) else None
    if hole is None:
        return operand
    if len(lang.typed_tokens(hole.typed)[0]) >= LONG_START_TOKENS:
        # a long start (`query is not None and |`, `"Tk" in sys.modules or "tk"|`): the whole expression
        # must print it again before reaching the operand at the cursor, more steps than a request's
        # budget may hold; the operand's own hole goes first, the whole expression is its fallback
        first = operand or _last_operand_hole(source, cursor, hole, after, parser, table, prev, identifiers, lang)
        if first is not None:
            first.fallback = hole
            return first
    hole.fallback = operand
    return hole


def _last_operand_hole(source: bytes, cursor: int, hole: Hole, after: int, parser: ts.Parser, table, prev,
                       identifiers, lang: Language) -> Hole | None:
    """The hole of the typed expression's last operand where that operand is whole at the cursor (a
    literal or a call closed, `or "tk"|`, `+ f(x)|`: the typed starts take only a name being typed as
    the expression itself), its typed text the operand's."""
    typed = hole.typed.encode("utf8")
    top = parser.parse(typed).root_node
    while top is not None and top.type not in lang.EXPRESSION_TYPES:
        top = top.named_children[0] if top.named_child_count else None
    last = top.named_children[-1] if top is not None and top.named_child_count > 1 else None
    if last is None or last.end_byte != len(typed) or last.start_byte == 0 or top.has_error:
        return None
    start = hole.start + last.start_byte
    inner = _typed_hole(source, cursor, start, typed[last.start_byte:].decode("utf8", "replace"),
                        lang.type_key(last), after, parser, table, prev, identifiers, lang)
    return inner if inner is not None and _whole(inner) else None


def _field_hole(source: bytes, cursor: int, line_start: int, line: str, rest: str, field: tuple[int, int, int, int],
                parser: ts.Parser, table, prev, identifiers, lang: Language) -> Hole | None:
    """The hole of an expression typed inside a string literal (an f-string's braces,
    `f"Key {'.'|} missing"`; `field` is `Language.interpolation`'s answer): the model's tree has the
    literal as one value, with no node inside, so the hole is searched with the embedded expression
    where the literal stands (`E('.'|)`), and its answers replace the typed text in the braces.  Where
    the literal is one of several written into one value (`"keys: " f"{|}"`), the expression stands
    where all of them stand: beside another literal it would not parse."""
    lit0, e0, e1, lit1 = field
    lit_start = line_start + len(line[:lit0].encode())
    lit_end = cursor + len(rest[:lit1].encode())
    # the block around the cursor, not the whole buffer, is parsed: where a cut falls in a literal and
    # garbles the parse, no literal starts at lit_start and the field stands alone
    lo, hi = window(source, cursor, lang, limit=FIELD_WINDOW_BYTES)
    group = lang.literal_group(lang.parse(source[lo:hi], parser), lit_start - lo)
    if group is not None:
        lit_start, lit_end = min(lit_start, lo + group[0]), max(lit_end, lo + group[1])
    shift = line_start + len(line[:e0].encode()) - lit_start
    field_end = cursor + len(rest[:e1].encode())
    moved = source[:lit_start] + source[lit_start + shift:field_end] + source[lit_end:]
    hole = find_typed_hole(moved, cursor - shift, lang=lang, parser=parser, table=table, prev=prev,
                           identifiers=identifiers, floor=lit_start)
    inside = lambda h: h is not None and lit_start <= h.start and h.end <= field_end - shift  # noqa: E731
    if not inside(hole):
        return None
    hole.fallback = hole.fallback if inside(hole.fallback) else None
    for h in (hole, hole.fallback):
        if h is not None:
            h.start, h.end, h.cursor = h.start + shift, h.end + shift, h.cursor + shift
    return hole


def _glued_hole(source: bytes, cursor: int, line_start: int, line: str, after: int, parser: ts.Parser, table,
                prev, identifiers, lang: Language) -> Hole | None:
    """The hole of an expression typed from a token of the cursor's line, innermost first, whose
    buffer is whole without the typed text: where the parse of the buffer with the placeholder
    joins the typed text to the text after the cursor (`Template(str|.substitute(`,
    `super()|(config)`, `len(keys|, n)]`, `f(x|` before the `for` of a generator on the next
    line), no expression of that parse starts the typed one, or only one whose answers cannot
    parse once inserted.  The answer is an expression that the text after the cursor continues
    (`Template(str)` + `.substitute(`)."""
    closing = frozenset(lang.OPEN_CLOSE.values())
    for tok in reversed(lang.tokens(line)):
        start = line_start + len(line[:tok.start].encode())
        typed = source[start:cursor].decode("utf8", "replace")
        if cursor - start > MAX_TYPED_CHARS:
            break
        if tok.text in closing or lang.lone_number(typed):
            continue
        hole = _typed_hole(source, cursor, start, typed, "", after, parser, table, prev, identifiers, lang)
        if hole is not None and _whole(hole):
            return hole
    return None


def _expression_hole(source: bytes, cursor: int, starts: list[tuple[int, str]], after: int,
                     parser: ts.Parser, table, prev, identifiers, lang: Language) -> Hole | None:
    """The hole of the whole expression typed from one of `starts` (innermost first), its typed text
    the search's constraint: the first that leaves the buffer whole, else the first found."""
    found = None
    for i, (start, typed_type) in enumerate(starts):
        typed = source[start:cursor].decode("utf8", "replace")
        # an expression around the innermost one only where it opened a bracket the buffer does not
        # close (`int(raw|`: the answer is `int(raw...)`, not `raw...` inside a call left open)
        if start >= cursor or lang.lone_number(typed) or (i and not lang.closers(typed)):
            continue
        hole = _typed_hole(source, cursor, start, typed, typed_type, after, parser, table, prev, identifiers, lang)
        if hole is not None and _whole(hole):
            return hole
        found = found or hole
    return found


def _typed_hole(source: bytes, cursor: int, start: int, typed: str, typed_type: str, after: int,
                parser: ts.Parser, table, prev, identifiers, lang: Language) -> Hole | None:
    """The hole of the expression typed from `start`, in the buffer without the typed text and the
    most of its closers an editor put after the cursor that leave the buffer whole."""
    found = None
    closers = lang.closers(typed)
    for k, clean in _cleaned(source, start, after, closers, others=True):
        hole = find_hole(clean, start, lang=lang, parser=parser, table=table, prev=prev, identifiers=identifiers)
        if hole is None or hole.start != start or hole.typed:
            continue
        hole.end += after + k - start
        hole.cursor, hole.typed, hole.typed_type = cursor, typed, typed_type
        hole.tree.file_identifiers = _with_typed_names(hole.tree.file_identifiers, typed, parser, lang)
        if _whole(hole):
            return hole          # the buffer's brackets are whole with it: the editor closed k of them
        if source.startswith(closers.encode()[:k], after):
            found = found or hole    # not where all the closers after it are taken out (`others`)
    return found


def _with_typed_names(counts: list[tuple[str, int]] | None, typed: str, parser: ts.Parser,
                      lang: Language) -> list[tuple[str, int]]:
    """The file's identifiers and the names of the typed text: the search's buffer has the typed
    text taken out, and a name typed nowhere else in the file (`os.getppid|`) is otherwise one the
    model can neither copy nor, outside its vocabulary, spell."""
    merged = dict(counts or [])
    for name, n in lang.identifier_counts(lang.parse(typed.encode("utf8"), parser).root_node):
        merged[name] = merged.get(name, 0) + n
    return list(merged.items())


def _whole(hole: Hole) -> bool:
    """Did the hole's buffer parse with no repair, and its statement with no error or missing token
    (tree-sitter closes a bracket left open by inventing the closer, which is no ERROR node)?"""
    if hole.repaired:
        return False
    w0, w1 = hole.window or (0, len(hole.ph_source))
    node = hole.ph_tree.root_node.descendant_for_byte_range(w0, w1)
    return node is None or not node.has_error


def _cleaned(source: bytes, start: int, after: int, closers: str, others: bool = False):
    """(k, the buffer without the typed text and the first k of its closers found after it), most first;
    with `others`, last, where the closing brackets and quotes right after it are more or others than
    those (an editor that closed a `{` inside the typed string: `(r"\\{|}")`), without all of them."""
    data = closers.encode()
    for k in range(len(data), -1, -1):
        if source.startswith(data[:k], after):
            yield k, source[:start] + source[after + k:]
    run = after
    while others and run < len(source) and source[run] in _CLOSERS_AFTER:
        run += 1
    if others and (run - after > len(data) or not data.startswith(source[after:run])):
        yield run - after, source[:start] + source[run:]


def _operand_hole(source: bytes, cursor: int, start: int, after: int, loc: _Located, closers: str,
                  parser: ts.Parser, table, prev, identifiers, lang: Language) -> Hole | None:
    """The empty operand's hole at `cursor`, its answers written from `start`: the typed text, the
    operand, and the closers of the typed text (replacing those the editor already put after it)."""
    hole = _hole_at(source, cursor, loc, table, identifiers, lang)
    if hole is None:
        return None
    k = 0
    for k, clean in _cleaned(source, start, after, closers):
        check = find_hole(clean, start, lang=lang, parser=parser, table=table, prev=prev, identifiers=identifiers)
        if check is not None and _whole(check):
            break                # with k of the closers taken out, the brackets around are whole
    hole.lead = source[start:cursor].decode("utf8", "replace")
    hole.lead += lang.operand_space(hole.lead)      # `time /` answered `time / x`, as printed
    hole.closers = closers
    hole.start, hole.end = start, after + k
    return hole


def _left_open(n: ts.Node, at: int, src: bytes, lang: Language) -> bool:
    """Does `n` run past the cursor only because the parser, recovering from the bracket typed
    before it and never closed, took in the text after the cursor (`row[|,` parsed as `row[|,]`)?
    Its typed text then starts an expression that one operand and its closers finish; such a node
    starting at the cursor is the operand's, and those above it may still be typed."""
    if not n.has_error or n.start_byte >= at:
        return n.has_error         # the operand's own node (`scope[|:` took in the block as a slice): on up
    typed = src[n.start_byte:at].decode("utf8", "replace")
    closers = lang.closers(typed)
    return bool(closers) and lang.parse_expression(typed + lang.OPERAND + closers) is not None


def _placements(line: str, lang: Language) -> list[str]:
    """Where the placeholder may go for the text typed on the line, the likeliest first."""
    if lang.partial_literal_start(line) is not None:
        return ["literal"]          # a number or string being typed cannot hold it: before the literal
    if lang.ends_in_keyword(line):
        return ["after", "cursor"]  # `x in|`: after the keyword, else as the start of a name (`x.in|dex`)
    return ["cursor"]


def _place(source: bytes, cursor: int, line_start: int, line: str, how: str, lang: Language) -> tuple[int, bytes]:
    """(where the placeholder goes, the buffer it goes in) for a placement of `_placements`."""
    if how == "literal":
        lit = lang.partial_literal_start(line)
        at = line_start + len(line[:lit].encode())
        quote = lang.closers(line[lit:]).encode()
        skip = len(quote) if quote and source.startswith(quote, cursor) else 0
        return at, source[:at] + source[cursor + skip:]
    if how == "after":
        return cursor + 1, source[:cursor] + b" " + source[cursor:]
    return cursor, source


def _typed_starts(loc: _Located, at: int, line_start: int, table, lang: Language) -> list[tuple[int, str]]:
    """Where the expressions being typed start (see find_typed_hole), in the located buffer, with their
    types ("" for a name or literal): the innermost first, then those around it that also start on the
    line and end at the cursor (`int(raw|` is `raw`, then `int(raw`)."""
    ph_end = at + len(PLACEHOLDER)
    limit = ph_end + len(loc.repaired)
    src = loc.ph_source
    while limit < len(src) and src[limit] in _CLOSER_BYTES:
        limit += 1
    out = []
    n = loc.ph
    while n is not None and n.type not in lang.STOP_TYPES:
        if n.start_byte < line_start or at - n.start_byte > MAX_TYPED_CHARS:
            break
        if n.end_byte > limit and not _left_open(n, at, src, lang):
            break
        # a name being typed is the expression itself (`f(a, lim|`), an empty one is not (`f(a, |`)
        typed_name = n.type == lang.IDENTIFIER and n.start_byte < at
        if n.is_named and (typed_name or lang.base_type(lang.type_key(n)) in lang.EXPRESSION_TYPES) \
                and (n.end_byte <= limit or n.start_byte < at) \
                and expression_position(n, table, lang) and (not out or n.start_byte < out[-1][0]):
            out.append((n.start_byte, "" if typed_name else lang.type_key(n)))
        n = n.parent
    if not out and loc.ph.start_byte >= line_start and expression_position(loc.ph, table, lang):
        out.append((loc.ph.start_byte, ""))
    return out
