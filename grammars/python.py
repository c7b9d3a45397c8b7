"""The Python tree the model sees, built on tree-sitter-python.

Named tree-sitter nodes become `Node`s.  Fixed punctuation is dropped; operators
that vary are folded into the node type (`binary_operator:+`,
`comparison_operator:<,<=`, `unary_operator:-`, `augmented_assignment:+=`), as
are the few shapes punctuation alone tells apart (`slice::_`, `yield:from`).

Terminals carry their source text as `value`.  Identifiers are split into
subtokens by snake_case, camelCase and digits; the split is reversible
(`join_subtokens`), and an identifier whose split would not join back is kept
whole.  Literals are not split: a string or number literal is a single
subtoken, its exact source text (prefix and quotes included), so the model can
copy it whole from the context or generate it when it is frequent ('' or
'utf-8').  Comments are dropped.

`print_node` prints an expression subtree back to source text.  Node types it
does not know raise `Unprintable`; the data pipeline counts them.

`PYTHON` (class `Python`) is all of this as a `Language` (grammars/language.py), the registry's
"python"; model/ and server/ reach it only through the registry.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import tree_sitter as ts
import tree_sitter_python

from anycode.grammars.language import Language, Node, Unprintable
from anycode.grammars.language import base_type as _base_type


# ------------------------------------------------------------------ node kinds

VALUED = frozenset({"identifier", "integer", "float", "string"})
"""Terminals whose value is generated as subtokens, ending in EOS-token."""

FIXED = frozenset({
    "true", "false", "none", "ellipsis", "keyword_separator", "positional_separator",
    "pass_statement", "break_statement", "continue_statement", "wildcard_import",
    "import_prefix", "line_continuation",
})
"""Terminals whose text the type alone fixes: nothing is generated below them."""

DROPPED = frozenset({"comment", "line_continuation"})

OPERATOR_TYPES = frozenset({
    "binary_operator", "boolean_operator", "comparison_operator", "unary_operator",
    "augmented_assignment",
})

EXPRESSION_TYPES = frozenset({
    "boolean_operator", "comparison_operator", "conditional_expression", "lambda",
    "named_expression", "not_operator", "attribute", "await", "binary_operator", "call",
    "dictionary", "dictionary_comprehension", "generator_expression", "list",
    "list_comprehension", "parenthesized_expression", "set", "set_comprehension",
    "subscript", "tuple", "unary_operator", "concatenated_string",
})
"""Expression node types a hole may hold (the same set as ../shared/bench/holebench.py)."""

ATOM_TYPES = frozenset({"identifier", "integer", "float", "string", "true", "false",
                        "none", "ellipsis", "concatenated_string"})
"""Types that count as a single AST node when sizing a target."""

FUNCTION_TYPES = frozenset({"function_definition"})

HOLE_FORBIDDEN = frozenset({
    ("assignment", "left"), ("augmented_assignment", "left"), ("for_statement", "left"),
    ("for_in_clause", "left"), ("with_item", "alias"), ("decorator", ""),
    ("delete_statement", ""), ("global_statement", ""), ("nonlocal_statement", ""),
    ("as_pattern", "alias"), ("keyword_argument", "name"),
})
"""(parent type, field) positions that are not expression holes."""


@lru_cache(maxsize=4096)
def kind_of(type_key: str) -> str:
    base = base_type(type_key)
    if base in VALUED:
        return "valued"
    if base in FIXED:
        return "fixed"
    return "nonterminal"


@lru_cache(maxsize=4096)
def base_type(type_key: str) -> str:
    return _base_type(type_key)


@lru_cache(maxsize=1)
def language() -> ts.Language:
    return ts.Language(tree_sitter_python.language())


def new_parser() -> ts.Parser:
    return ts.Parser(language())


@lru_cache(maxsize=1)
def _identifier_query() -> ts.Query:
    return ts.Query(language(), "(identifier) @id")


@lru_cache(maxsize=1)
def _comment_query() -> ts.Query:
    return ts.Query(language(), "(comment) @c")


def comments(root: ts.Node, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """The byte ranges of the comments under `root` that start in bytes start..end, in order."""
    cursor = ts.QueryCursor(_comment_query())
    end = root.end_byte if end is None else end
    cursor.set_byte_range(start, end)
    spans = {(n.start_byte, n.end_byte) for n in cursor.captures(root).get("c", []) if start <= n.start_byte < end}
    return sorted(spans)


def identifier_counts(root: ts.Node, start: int = 0, end: int | None = None) -> list[tuple[str, int]]:
    """Every identifier under `root` (starting in bytes start..end) with its number of occurrences,
    in order of first occurrence."""
    cursor = ts.QueryCursor(_identifier_query())
    if start or end is not None:
        end = root.end_byte if end is None else end
        cursor.set_byte_range(start, end)
    nodes = [n for n in cursor.captures(root).get("id", []) if start <= n.start_byte and (end is None or n.start_byte < end)]
    nodes.sort(key=lambda n: n.start_byte)
    counts: dict[str, int] = {}
    for n in nodes:
        t = n.text.decode("utf8", "replace")
        counts[t] = counts.get(t, 0) + 1
    return list(counts.items())


# ------------------------------------------------------------------ subtokens

_PIECE = re.compile(r"_+|[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^A-Za-z0-9_]+")


def _glue(a: str, b: str) -> str:
    """What stands between two alphanumeric subtokens in an identifier."""
    if b[0].isdigit() or a[-1].isdigit() and b[0].islower():
        return ""
    if b[0].isupper() and (a[-1].islower() or a[-1].isdigit()):
        return ""  # camelCase
    if a.isupper() and b[0].isupper() and b[1:].islower() and len(b) > 1:
        return ""  # HTTPServer
    return "_"


def join_subtokens(parts: list[str]) -> str:
    out = ""
    prev = ""
    for part in parts:
        if prev and prev[-1] != "_" and part[0] != "_" and (prev[-1].isalnum() and part[0].isalnum()):
            out += _glue(prev, part)
        out += part
        prev = part
    return out


def split_identifier(name: str) -> list[str]:
    return list(_split_identifier(name))


@lru_cache(maxsize=65536)
def _split_identifier(name: str) -> tuple[str, ...]:
    pieces = _PIECE.findall(name)
    parts: list[str] = []
    for i, piece in enumerate(pieces):
        # a single underscore between two alphanumeric pieces is implied by the joiner
        if piece == "_" and 0 < i < len(pieces) - 1 and pieces[i - 1][-1].isalnum() and pieces[i + 1][0].isalnum():
            continue
        parts.append(piece)
    if not parts or join_subtokens(parts) != name:
        return (name,)
    return tuple(parts)


def subtokens(type_key: str, value: str) -> list[str]:
    if base_type(type_key) == "identifier":
        return split_identifier(value)
    return [value]


def join_value(type_key: str, parts: list[str]) -> str:
    if base_type(type_key) == "identifier":
        return join_subtokens(parts)
    return "".join(parts)


# ------------------------------------------------------------------ the tree


def _slice_form(node: ts.Node) -> str:
    return "".join("_" if c.is_named else c.type for c in node.children if c.type not in DROPPED)


def type_key(node: ts.Node) -> str:
    t = node.type
    if t in OPERATOR_TYPES:
        ops = [c.type for c in node.children if not c.is_named]
        if t == "boolean_operator" or t == "binary_operator":
            ops = [node.child_by_field_name("operator").type]
        return f"{t}:{','.join(ops)}"
    if t == "slice":
        return f"slice:{_slice_form(node)}"
    if t == "yield" and any(c.type == "from" for c in node.children):
        return "yield:from"
    if t in ("for_in_clause", "for_statement", "with_statement", "function_definition") and any(
            c.type == "async" for c in node.children):
        return f"{t}:async"
    if t == "tuple" and node.named_child_count == 1:
        return "tuple"  # `(x,)`: the printer adds the comma
    if t == "import_from_statement" and node.child_by_field_name("module_name") is None:
        return t
    return t


def convert(node: ts.Node, field_name: str = "") -> Node:
    """The model's view of a tree-sitter subtree."""
    key = type_key(node)
    out = Node(key, start_byte=node.start_byte, end_byte=node.end_byte, field=field_name)
    base = node.type
    if base in VALUED or base in FIXED or node.child_count == 0 and node.is_named:
        if base not in FIXED:
            out.value = node.text.decode("utf8", "replace")
        return out
    for i, child in enumerate(node.children):
        if not child.is_named or child.type in DROPPED:
            continue
        out.children.append(convert(child, node.field_name_for_child(i) or ""))
    return out


def parse(source: bytes, parser: ts.Parser | None = None) -> ts.Tree:
    return (parser or new_parser()).parse(source)


# ------------------------------------------------------------------ printing


def _join(nodes, sep=", "):
    return sep.join(print_node(n) for n in nodes)


def _comprehension(node: Node, open_: str, close: str) -> str:
    body, *clauses = node.children
    return open_ + print_node(body) + " " + " ".join(print_node(c) for c in clauses) + close


def print_node(node: Node) -> str:
    t = node.type
    base = base_type(t)
    op = t.split(":", 1)[1] if ":" in t else ""
    k = node.children
    if base in VALUED:
        if node.value is None:
            raise Unprintable(t)
        return node.value
    if base in _FIXED_TEXT:
        return _FIXED_TEXT[base]
    if base == "binary_operator":
        return f"{print_node(k[0])} {op} {print_node(k[1])}"
    if base == "boolean_operator":
        return f"{print_node(k[0])} {op} {print_node(k[1])}"
    if base == "comparison_operator":
        ops = op.split(",")
        if len(ops) != len(k) - 1:
            raise Unprintable(t)
        out = print_node(k[0])
        for o, c in zip(ops, k[1:]):
            out += f" {o} {print_node(c)}"
        return out
    if base == "unary_operator":
        return f"{op}{print_node(k[0])}"
    if base == "not_operator":
        return f"not {print_node(k[0])}"
    if base == "conditional_expression":
        return f"{print_node(k[0])} if {print_node(k[1])} else {print_node(k[2])}"
    if base == "named_expression":
        return f"{print_node(k[0])} := {print_node(k[1])}"
    if base == "await":
        return f"await {print_node(k[0])}"
    if base == "lambda":
        if k and k[0].type == "lambda_parameters":
            return f"lambda {print_node(k[0])}: {_join(k[1:])}"
        return f"lambda: {_join(k)}"
    if base == "lambda_parameters":
        return _join(k)
    if base in ("expression_list", "pattern_list"):
        text = _join(k)
        return text + "," if len(k) == 1 else text
    if base in ("default_parameter", "keyword_argument"):
        return f"{print_node(k[0])}={print_node(k[1])}"
    if base in ("list_splat", "list_splat_pattern"):
        return "*" + print_node(k[0])
    if base in ("dictionary_splat", "dictionary_splat_pattern"):
        return "**" + print_node(k[0])
    if base == "attribute":
        return f"{print_node(k[0])}.{print_node(k[1])}"
    if base == "call":
        return print_node(k[0]) + print_node(k[1])
    if base == "argument_list":
        return "(" + _join(k) + ")"
    if base == "subscript":
        return print_node(k[0]) + "[" + _join(k[1:]) + "]"
    if base == "slice":
        parts = iter(k)
        return "".join(print_node(next(parts)) if ch == "_" else ch for ch in op)
    if base == "parenthesized_expression":
        return "(" + print_node(k[0]) + ")"
    if base in ("tuple", "tuple_pattern"):
        return "(" + _join(k) + ("," if len(k) == 1 else "") + ")"
    if base in ("list", "list_pattern"):
        return "[" + _join(k) + "]"
    if base == "set":
        return "{" + _join(k) + "}"
    if base == "dictionary":
        return "{" + _join(k) + "}"
    if base == "pair":
        return f"{print_node(k[0])}: {print_node(k[1])}"
    if base == "list_comprehension":
        return _comprehension(node, "[", "]")
    if base in ("set_comprehension", "dictionary_comprehension"):
        return _comprehension(node, "{", "}")
    if base == "generator_expression":
        return _comprehension(node, "(", ")")
    if base == "for_in_clause":
        prefix = "async for" if op == "async" else "for"
        left = [c for c in k if c.field == "left"]
        right = [c for c in k if c.field == "right"]
        if len(left) != 1 or not right:
            raise Unprintable(t)
        return f"{prefix} {print_node(left[0])} in {_join(right)}"
    if base == "if_clause":
        return "if " + print_node(k[0])
    if base == "concatenated_string":
        return _join(k, " ")
    if base == "yield":
        word = "yield from" if op == "from" else "yield"
        return f"{word} {_join(k)}" if k else word
    if base == "parenthesized_list_splat":
        return "(" + print_node(k[0]) + ")"
    raise Unprintable(t)


_FIXED_TEXT = {"true": "True", "false": "False", "none": "None", "ellipsis": "...",
               "keyword_separator": "*", "positional_separator": "/"}


# ------------------------------------------------------------------ round trip


def parse_expression(text: str, parser: ts.Parser | None = None) -> Node | None:
    """Parse `text` as one expression; None when it is not one expression that parses."""
    src = b"_ = (\n" + text.encode("utf8") + b"\n)\n"
    tree = parse(src, parser)
    if tree.root_node.has_error:
        return None
    stmt = tree.root_node.named_children[0]
    assign = stmt.named_children[0]
    paren = assign.child_by_field_name("right")
    if paren is None or paren.type != "parenthesized_expression":
        return None
    inner = [c for c in paren.named_children if c.type not in DROPPED]
    if len(inner) != 1:
        return None
    return convert(inner[0])


def round_trips(node: Node, parser: ts.Parser | None = None) -> bool:
    try:
        text = print_node(node)
    except (Unprintable, IndexError, StopIteration):
        return False
    back = parse_expression(text, parser)
    return back is not None and back.key() == node.key()


# ------------------------------------------------------------------ typed text

# Python's tokens as an editor line shows them; a string may be cut short (the user is typing it)
_TOKEN = re.compile(r"""
    (?P<string>[rRbBuUfF]{0,2}(?:'''(?:\\.|[^\\])*?(?:'''|$)|\"\"\"(?:\\.|[^\\])*?(?:\"\"\"|$)
                              |'(?:\\.|[^\\'\n])*(?:'|$)|"(?:\\.|[^\\"\n])*(?:"|$)))
  | (?P<number>(?:0[xXoObB][0-9a-fA-F_]*|\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d*)?|\.\d[\d_]*(?:[eE][+-]?\d*)?)[jJlL]?)
  | (?P<name>[^\W\d]\w*)
  | (?P<op>\*\*=?|//=?|>>=?|<<=?|->|:=|\.\.\.|[-+*/%@&|^<>=!]=|[-+*/%@&|^~<>=.,:;()\[\]{}]|!)
  | (?P<other>\S)
""", re.VERBOSE | re.DOTALL)
OPEN_CLOSE = {"(": ")", "[": "]", "{": "}"}
KEYWORDS = frozenset({
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
})


@dataclass(frozen=True)
class Token:
    text: str
    kind: str        # string, number, name, op, other
    start: int       # character offsets in the text tokenized
    end: int

    @property
    def closed_string(self) -> bool:
        return self.kind == "string" and _string_closer(self.text) == ""


def _string_closer(text: str) -> str:
    """The quotes an unterminated string literal still needs ('' when it is terminated)."""
    body = text.lstrip("rRbBuUfF")
    q = body[:3] if body[:3] in ("'''", '"""') else body[:1]
    rest = body[len(q):]
    if len(rest) >= len(q) and rest.endswith(q) and not _escaped(rest, len(rest) - len(q)):
        return ""
    return q


def _escaped(s: str, i: int) -> bool:
    n = 0
    while i - n - 1 >= 0 and s[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def tokens(text: str) -> list[Token]:
    """The tokens of a piece of code (a typed prefix, a printed candidate); comments are not expected."""
    out = []
    for m in _TOKEN.finditer(text):
        out.append(Token(m.group(), m.lastgroup or "other", m.start(), m.end()))
    return out


def typed_tokens(text: str) -> tuple[list[str], bool]:
    """The tokens of the typed start of an expression, and whether the last one may still grow
    (the user is typing it: a name, keyword, number, operator or an unterminated string)."""
    toks = tokens(text)
    partial = bool(toks) and toks[-1].end == len(text) and not (toks[-1].kind == "string" and toks[-1].closed_string)
    return [t.text for t in toks], partial


def closers(text: str) -> str:
    """What closes the typed text: the quote of a string it leaves open, then its open brackets, innermost first."""
    stack: list[str] = []
    quote = ""
    for t in tokens(text):
        if t.kind == "string":
            quote = _string_closer(t.text)
        elif t.text in OPEN_CLOSE:
            stack.append(OPEN_CLOSE[t.text])
        elif stack and t.text == stack[-1]:
            stack.pop()
    return quote + "".join(reversed(stack))


def partial_literal_start(text: str) -> int | None:
    """Where the last token of `text` starts when it is a literal that the placeholder cannot follow:
    one still being typed (a number, an unterminated string), which no parse of the text can hold, or
    a string closed at the end of `text` (`if 'MODULE'|`: the expression typed starts at it); else None."""
    toks = tokens(text)
    if not toks or toks[-1].end != len(text):
        return None
    last = toks[-1]
    if last.kind in ("number", "string"):
        return last.start
    return None


def open_string(text: str) -> str:
    """The quote that closes the string literal `text` ends inside (`'MODULE`, `", `), else ""."""
    toks = tokens(text)
    if not toks or toks[-1].end != len(text) or toks[-1].kind != "string":
        return ""
    return _string_closer(toks[-1].text)


def is_string(token: str) -> bool:
    """Is `token` one string literal, closed or not (`'a'`, `"ab`, `f"x"`)?"""
    toks = tokens(token)
    return len(toks) == 1 and toks[0].kind == "string" and toks[0].start == 0 and toks[0].end == len(token)


def lone_number(text: str) -> bool:
    """Is `text` one number and nothing else (the user is typing a number: nothing to suggest)?"""
    toks = tokens(text)
    return len(toks) == 1 and toks[0].kind == "number" and toks[0].end == len(text.rstrip())


REPAIRS = (":", ": pass", " else None", ": None")
"""What may follow the placeholder to make the statement around it parse (after the brackets it leaves
open): a header's colon, a block, the rest of a conditional expression or of a lambda."""

_NAME = re.compile(r"[^\W\d]\w*")
_STRING_PREFIX = re.compile(r"[rRbBuUfF]{1,2}")


def value_starts(type_key: str, text: str, partial: bool) -> bool:
    """May a `type_key` value print as the token `text` (or, `partial`, as one that begins with it)?"""
    base = base_type(type_key)
    if base == "identifier":
        return bool(_NAME.fullmatch(text)) and (partial or text not in KEYWORDS)
    if base in ("integer", "float"):
        return text[:1].isdigit() or (text[:1] == "." and text[1:2].isdigit()) or (partial and text == ".")
    if base == "string":
        toks = tokens(text)
        return (len(toks) == 1 and toks[0].kind == "string") or (partial and bool(_STRING_PREFIX.fullmatch(text)))
    return True


_SAME_START = {  # expressions a typed start does not tell apart yet: `(a` may end as a tuple, `[x` as a comprehension
    "parenthesized_expression": "(", "tuple": "(", "generator_expression": "(",
    "list": "[", "list_comprehension": "[",
    "dictionary": "{", "set": "{", "dictionary_comprehension": "{", "set_comprehension": "{",
}
_GROWING_OPERATORS = frozenset({"<", ">", "*", "/", "=", "!"})   # `a <` may be the start of `a <= b`


def typed_kind(type_key: str, typed_last: str = "", partial: bool = False) -> str:
    """What the typed start of an expression of type `type_key` says of the whole expression's node
    there, as a key that node's type must map to as well: brackets alone leave the kind of display
    open, a comparison may go on (`a < b < c`), and an operator still being typed may grow."""
    base = base_type(type_key)
    if base in _SAME_START:
        return _SAME_START[base]
    if partial and typed_last in _GROWING_OPERATORS and base in OPERATOR_TYPES:
        return base
    if base == "comparison_operator":
        return type_key.split(",")[0]
    return type_key


_FSTRING_OPENING = re.compile(r"""[rRbBuU]?[fF][rRbBuU]?('''|\"\"\"|'|")""")


def interpolation(before: str, after: str) -> tuple[int, int, int, int] | None:
    """The replacement field of an f-string the cursor is in (`f"Key {'.'|} missing"`): the
    literal's start and the field's expression start in `before`, the field's end (its `}`) and the
    literal's end in `after`; None elsewhere, and in a format specifier or a field that does not
    close on the line."""
    toks = tokens(before)
    if not toks or toks[-1].kind != "string" or toks[-1].end != len(before):
        return None
    lit = toks[-1]
    m = _FSTRING_OPENING.match(lit.text)
    opened = m and _open_field(before, lit.start + m.end())
    if not opened:
        return None
    field_end = _field_end(after, opened[1], opened[2])
    lit_end = None if field_end is None else _literal_end(after, field_end + 1, m.group(1))
    return None if lit_end is None else (lit.start, opened[0], field_end, lit_end)


def literal_group(tree: ts.Tree, start: int) -> tuple[int, int] | None:
    """The implicit concatenation (`"keys: " f"{k}"`) holding the string literal that starts at
    `start` in the parsed buffer, as a byte range; None where that literal stands alone."""
    n = tree.root_node.descendant_for_byte_range(start, start)
    while n is not None and not (n.type == "string" and n.start_byte == start):
        n = n.parent if n.start_byte == start else None
    group = n.parent if n is not None else None
    if group is None or group.type != "concatenated_string":
        return None
    return group.start_byte, group.end_byte


def _open_field(text: str, i: int) -> tuple[int, str, str] | None:
    """(where the expression of the replacement field left open at the end of `text` starts, the
    quote of a string being typed in it or "", the brackets left open in it), reading an f-string's
    body from `i`; None where no field is open or the text ends in its conversion or format specifier."""
    start, stack = None, ""
    while i < len(text):
        c = text[i]
        if start is None:
            if text.startswith("{{", i) or text.startswith("}}", i):
                i += 2
                continue
            if c == "{":
                start, stack = i + 1, ""
        elif c in OPEN_CLOSE:
            stack += c
        elif stack and c == OPEN_CLOSE[stack[-1]]:
            stack = stack[:-1]
        elif c == "}" and "{" not in stack:
            start = None
        elif not stack and (c == "!" and not text.startswith("!=", i) or c == ":"):
            return None               # past the expression: a conversion or a format specifier
        elif c in "'\"":
            j = text.find(c, i + 1)
            if j < 0:
                return start, c, stack     # a string being typed in the field
            i = j
        i += 1
    return None if start is None else (start, "", stack)


def _field_end(after: str, quote: str, stack: str) -> int | None:
    """Where the replacement field the cursor is in ends (its `}`, conversion or format specifier)
    in the text after the cursor, which may first close the string `quote` opened and the brackets
    of `stack`; or None."""
    i = after.find(quote) + 1 if quote else 0
    while i < len(after):
        c = after[i]
        if c in OPEN_CLOSE:
            stack += c
        elif stack and c == OPEN_CLOSE[stack[-1]]:
            stack = stack[:-1]
        elif c == "}" and "{" not in stack or not stack and (c == ":" or c == "!" and not after.startswith("!=", i)):
            return i
        elif c in "'\"":
            j = after.find(c, i + 1)
            if j < 0:
                return None
            i = j
        i += 1
    return None


def _literal_end(after: str, i: int, quote: str) -> int | None:
    """Where the f-string closed by `quote` ends, from offset `i` of `after` (past the field)."""
    depth = 0
    while i < len(after):
        if after[i] == "\\" or depth == 0 and after.startswith(("{{", "}}"), i):
            i += 2
            continue
        if after[i] == "{":
            depth += 1
        elif after[i] == "}" and depth:
            depth -= 1
        elif depth == 0 and after.startswith(quote, i):
            return i + len(quote)
        i += 1
    return None


_EXPRESSION_KEYWORDS = frozenset({"not", "in", "is", "and", "or", "if", "else", "lambda", "await", "for"})


def ends_in_keyword(text: str) -> bool:
    """Does `text` end with a keyword that more of the expression follows (`x in`, `not`, `a if`)?
    Such a word is not the start of a name: the expression goes on after it."""
    toks = tokens(text)
    return bool(toks) and toks[-1].end == len(text) and toks[-1].text in _EXPRESSION_KEYWORDS


def space_triggers(before: str) -> bool:
    """Is a space typed after `before` a place to offer expressions: after an operator or a keyword
    that an expression follows (`a +`, `return`, `not`, `in`, `lambda`), not after a name or a literal."""
    toks = tokens(before.rstrip(" "))
    if not toks:
        return False
    last = toks[-1]
    if last.kind == "op":
        return last.text not in (")", "]", "}", ".", ";")
    return last.kind == "name" and last.text in KEYWORDS and last.text not in (
        "True", "False", "None", "pass", "break", "continue", "def", "class", "import", "global", "nonlocal", "as",
        "try", "finally")


_BINARY_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "@", "<<", ">>", "&", "|", "^",
                         "<", ">", "<=", ">=", "==", "!="})
_NOT_OPERANDS = KEYWORDS - {"True", "False", "None"}      # the keywords that are no operand


def operand_space(before: str) -> str:
    """The space print_node writes between `before`, typed up to an empty operand, and that operand:
    after a binary or comparison operator, a comma, `:=` or a keyword (`time /` + `x` -> `time / x`,
    `f(a,` + `b` -> `f(a, b`); none after a bracket, a dot, a sign or a splat (`f(-`, `f(*`), nor
    where `before` ends in a space already."""
    toks = tokens(before)
    if not toks or toks[-1].end != len(before):
        return ""
    last = toks[-1]
    if last.kind == "name":
        return " " if last.text in _NOT_OPERANDS else ""
    if last.text in (",", ":="):
        return " "
    if last.text not in _BINARY_OPS or len(toks) < 2:
        return ""
    prev = toks[-2]            # an operator after an operand is binary; after anything else a sign or splat
    operand_end = prev.kind in ("number", "string") or prev.text in (")", "]", "}") or (
        prev.kind == "name" and prev.text not in _NOT_OPERANDS)
    return " " if operand_end else ""


_SELF_NAMES = frozenset({"self", "cls"})


def redundant(node: Node) -> bool:
    """Does `node` hold an expression nobody writes: one operand on both sides of `and`, `or` or a
    comparison (`a and a`, `len(x) == len(x)`; `x != x`, the test for NaN, excepted), an operand and
    its negation joined by `and` or `or` (`a and not a`), a value indexed by itself (`words[words]`),
    or a method handed its own receiver (`words.get(words)`; `self` and `cls` excepted)?  In the test
    split's code the first occurs once (a `!=`), the second and third never, the fourth in 2 of
    49,024 method calls."""
    for n in node.walk():
        kind, _, ops = n.type.partition(":")
        if kind in ("boolean_operator", "subscript") and len(n.children) == 2:
            a, b = (c.key() for c in n.children)
            if a == b:
                return True
            if kind == "boolean_operator" and any(
                    c.type == "not_operator" and len(c.children) == 1 and c.children[0].key() == other
                    for c, other in ((n.children[0], b), (n.children[1], a))):
                return True
        elif kind == "comparison_operator":
            pairs = zip(ops.split(","), n.children, n.children[1:])
            if any(op != "!=" and a.key() == b.key() for op, a, b in pairs):
                return True
        elif kind == "call" and len(n.children) == 2 and base_type(n.children[0].type) == "attribute" \
                and base_type(n.children[1].type) == "argument_list":
            receiver = n.children[0].children[0] if n.children[0].children else None
            if receiver is not None and base_type(receiver.type) == "identifier" \
                    and receiver.value not in _SELF_NAMES \
                    and any(a.key() == receiver.key() for a in n.children[1].children):
                return True
    return False


# ------------------------------------------------------------------ holes and the search

NAME_POSITIONS = frozenset({
    ("function_definition", "name"), ("class_definition", "name"), ("attribute", "attribute"),
    ("default_parameter", "name"), ("typed_parameter", ""), ("typed_default_parameter", "name"),
    ("parameters", ""), ("lambda_parameters", ""), ("dotted_name", ""), ("aliased_import", ""),
    ("import_statement", ""), ("import_from_statement", ""), ("keyword_argument", "name"),
})
"""Positions that hold names, not expressions (holes use them when there is no grammar table)."""

STOP_TYPES = frozenset({"module", "block", "function_definition", "class_definition", "decorated_definition",
                        "ERROR", "expression_statement"})
"""A hole (and a verified candidate) never reaches above these."""


def target_root_type(t: str) -> bool:
    """The dataset's targets: expressions (of two nodes or more), string concatenations apart."""
    b = base_type(t)
    return b in EXPRESSION_TYPES and b != "concatenated_string"


def starts_block(source: bytes, at: int) -> bool:
    """Does the line at `at` begin a top-level statement (code at column 0 that continues none)?"""
    c = source[at: at + 1]
    return (c.isalpha() or c in (b"@", b"_")) and not source.startswith((b"else", b"elif", b"except", b"finally"), at)


_MIN_CHILDREN = {
    "binary_operator": 2, "boolean_operator": 2, "unary_operator": 1, "not_operator": 1, "await": 1,
    "parenthesized_expression": 1, "if_clause": 1, "list_splat": 1, "dictionary_splat": 1,
    "parenthesized_list_splat": 1, "conditional_expression": 3, "named_expression": 2,
    "default_parameter": 2, "keyword_argument": 2, "attribute": 2, "call": 2, "pair": 2, "subscript": 2,
    "list_comprehension": 2, "set_comprehension": 2, "dictionary_comprehension": 2,
    "generator_expression": 2, "for_in_clause": 2,
}


def min_children(t: str) -> int:
    """The children a node of type `t` needs before it prints."""
    base = base_type(t)
    if base == "comparison_operator":
        return len(t.split(":", 1)[1].split(",")) + 1 if ":" in t else 2
    if base == "slice":
        return t.split(":", 1)[1].count("_") if ":" in t else 0
    return _MIN_CHILDREN.get(base, 0)


def sentinel(parent_type: str, k: int, marker: str) -> Node:
    """A stand-in for child k of an open `parent_type` node: a name printing as `marker` (a lambda's
    first child is its parameter list)."""
    if base_type(parent_type) == "lambda" and k == 0:
        return Node("lambda_parameters", [Node("identifier", value=marker)])
    return Node("identifier", value=marker)


def set_fields(node: Node) -> None:
    """A comprehension clause prints its target (field `left`) apart from its iterables."""
    if base_type(node.type) == "for_in_clause":
        for j, c in enumerate(node.children):
            c.field = "left" if j == 0 else "right"


VALUE_SHAPES = {
    "identifier": re.compile(r"[^\W\d]\w*|\d+|_+|\w+", re.UNICODE),
    "integer": re.compile(r"(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|\d[\d_]*)[lLjJ]?"),
    "float": re.compile(r"(\d[\d_]*)?\.?\d*([eE][+-]?\d+)?[jJ]?"),
    "string": re.compile(r"(?s)[rRbBuUfF]{0,2}('''.*'''|\"\"\".*\"\"\"|'.*'|\".*\")"),
}
"""The shape of a value (a part of a name) the grammar table lets the search generate."""


# ------------------------------------------------------------------ the language

_STRING_OPENING = re.compile(r"[rRuUbBfF]*('''|\"\"\"|'|\")")


class Python(Language):
    """Python, on tree-sitter-python: this module's functions as a `Language`."""
    id = "python"
    language_ids = frozenset({"python", "py", "python3"})
    extensions = (".py", ".pyi", ".pyw")
    corpus = "python.tsv"
    VALUED, FIXED, DROPPED = VALUED, FIXED, DROPPED
    EXPRESSION_TYPES, ATOM_TYPES, FUNCTION_TYPES = EXPRESSION_TYPES, ATOM_TYPES, FUNCTION_TYPES
    HOLE_FORBIDDEN, NAME_POSITIONS, STOP_TYPES = HOLE_FORBIDDEN, NAME_POSITIONS, STOP_TYPES
    OPEN_CLOSE, REPAIRS, VALUE_SHAPES = OPEN_CLOSE, REPAIRS, VALUE_SHAPES

    new_parser = staticmethod(new_parser)
    type_key = staticmethod(type_key)
    convert = staticmethod(convert)
    base_type = staticmethod(base_type)
    kind_of = staticmethod(kind_of)
    subtokens = staticmethod(subtokens)
    join_value = staticmethod(join_value)
    split_identifier = staticmethod(split_identifier)
    identifier_counts = staticmethod(identifier_counts)
    comments = staticmethod(comments)
    print_node = staticmethod(print_node)
    parse_expression = staticmethod(parse_expression)
    round_trips = staticmethod(round_trips)
    target_root_type = staticmethod(target_root_type)
    starts_block = staticmethod(starts_block)
    min_children = staticmethod(min_children)
    sentinel = staticmethod(sentinel)
    set_fields = staticmethod(set_fields)
    tokens = staticmethod(tokens)
    typed_tokens = staticmethod(typed_tokens)
    closers = staticmethod(closers)
    typed_kind = staticmethod(typed_kind)
    value_starts = staticmethod(value_starts)
    partial_literal_start = staticmethod(partial_literal_start)
    lone_number = staticmethod(lone_number)
    open_string = staticmethod(open_string)
    is_string = staticmethod(is_string)
    ends_in_keyword = staticmethod(ends_in_keyword)
    interpolation = staticmethod(interpolation)
    literal_group = staticmethod(literal_group)
    space_triggers = staticmethod(space_triggers)
    operand_space = staticmethod(operand_space)
    redundant = staticmethod(redundant)

    def parse(self, source: bytes, parser: ts.Parser | None = None) -> ts.Tree:
        return parse(source, parser)

    def fixed_text(self, type_key: str) -> str:
        base = base_type(type_key)
        return _FIXED_TEXT.get(base, base)

    SCOPE_TYPES = frozenset({"class_definition"})

    def docstring(self, fn):
        """A string literal standing as the first statement of the function's body."""
        body = fn.child_by_field_name("body")
        if body is None or body.named_child_count == 0:
            return None
        first = body.named_children[0]
        if first.type == "expression_statement" and first.named_child_count == 1 \
                and first.named_children[0].type == "string":
            return first
        return None

    def docstring_text(self, doc) -> str:
        """The literal's source without its prefix and quotes (escapes are left as they are)."""
        raw = doc.named_children[0].text.decode("utf8", "replace")
        m = _STRING_OPENING.match(raw)
        if not m:
            return raw
        body = raw[m.end():]
        return body[: -len(m.group(1))] if body.endswith(m.group(1)) else body


PYTHON = Python()
