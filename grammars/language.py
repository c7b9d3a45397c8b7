"""The language interface: what model/ and server/ know of a programming language.

A `Language` carries everything language-specific that the data pipeline, the search and the
server use, so that none of them names a language:

* parsing: `new_parser`, `parse`;
* the tree the model sees: `convert` (a tree-sitter node -> `Node`), `type_key`, `kind_of`,
  `subtokens` / `join_value` (a value as the model spells it), the node-type sets below;
* printing: `print_node` (a generated tree -> source text; `Unprintable` where it cannot),
  `parse_expression`, `round_trips`;
* holes: which node types may be a hole's root (`target_root_type`), positions that hold names
  (`NAME_POSITIONS`) or no expression (`HOLE_FORBIDDEN`), what may follow a placeholder to make
  its statement parse (`REPAIRS`), where a top-level block starts (`starts_block`), the node
  types a hole never reaches above (`STOP_TYPES`), the identifier counts of a buffer;
* the search: the children a partial tree needs before it prints (`min_children`), the
  placeholder a partial tree prints with (`sentinel`), field names printing relies on
  (`set_fields`);
* typed text (typing along, model/prefix.py, model/holes.py): `tokens`, `typed_tokens`,
  `closers`, `typed_kind`, `value_starts`, `partial_literal_start`, `lone_number`, `open_string`, `is_string`,
  `ends_in_keyword`, `space_triggers`, `operand_space`, `interpolation`, `literal_group`;
* code search (model/search_data.py): a function's documentation (`docstring`), the definitions
  whose names qualify a function's (`SCOPE_TYPES`, `definition_name`), string literals (`STRING`).

Languages are registered by id in `anycode.grammars` (the registry); a model directory records
the id of its language in config.json and manifest.json.  `Node` and `Unprintable` are the same
for every language.
"""
from __future__ import annotations

from dataclasses import dataclass, field


class Unprintable(ValueError):
    """A tree (or a node type) the language's printer cannot print."""


def base_type(type_key: str) -> str:
    """The tree-sitter type of a model type key (`binary_operator:+` -> `binary_operator`)."""
    return type_key.split(":", 1)[0]


@dataclass
class Node:
    """A node of the tree the model sees: a type key, its children, and a value for terminals."""
    type: str
    children: list["Node"] = field(default_factory=list)
    value: str | None = None
    start_byte: int = 0
    end_byte: int = 0
    field: str = ""           # the tree-sitter field name this node fills in its parent

    def walk(self):
        stack = [self]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def size(self) -> int:
        return sum(1 for _ in self.walk())

    def shape(self) -> tuple:
        """The tree without leaf values (tree@k compares these)."""
        return (self.type, tuple(c.shape() for c in self.children))

    def key(self) -> tuple:
        """The whole tree, leaf values included (exact match compares these)."""
        return (self.type, self.value, tuple(c.key() for c in self.children))


class Language:
    """The interface; a language subclasses it and fills in every attribute and method.

    Languages compare and hash by id: a copy (a tree's language unpickled in a worker process) is the
    same language as the registry's instance, and either may key a cache."""

    id: str = ""                              # the registry's key, as model directories record it
    language_ids: frozenset[str] = frozenset()  # LSP languageIds of its documents
    extensions: tuple[str, ...] = ()          # file suffixes, for documents sent without a languageId
    corpus: str = ""                          # the corpus list under model/corpora/ (anycode corpus fetch)

    # ---------------------------------------------------------------- the tree the model sees
    VALUED: frozenset[str] = frozenset()      # terminals whose value is generated as subtokens
    FIXED: frozenset[str] = frozenset()       # terminals whose text the type alone fixes
    DROPPED: frozenset[str] = frozenset()     # tree-sitter types the model never sees (comments)
    EXPRESSION_TYPES: frozenset[str] = frozenset()   # expression types a hole may hold
    ATOM_TYPES: frozenset[str] = frozenset()  # types that count as one node when sizing a target
    FUNCTION_TYPES: frozenset[str] = frozenset()     # the context of a hole: the enclosing one of these
    IDENTIFIER: str = "identifier"            # the type of a name (the placeholder parses as one)
    STRING: str = "string"                    # the type of a string literal (its words count in code search)
    SCOPE_TYPES: frozenset[str] = frozenset()  # definitions (classes) whose names qualify a function's
    COMMENT: str = "comment"
    ROOT: str = "module"                      # the type of a whole file's tree
    STATEMENT: str = "expression_statement"   # an expression standing as a statement (no hole there)
    HOLE_FORBIDDEN: frozenset[tuple[str, str]] = frozenset()   # (parent type, field): no expression hole
    NAME_POSITIONS: frozenset[tuple[str, str]] = frozenset()   # (parent type, field) holding names
    STOP_TYPES: frozenset[str] = frozenset()  # a hole and a verified candidate never reach above these
    OPEN_CLOSE: dict = {}                     # bracket -> its closer
    REPAIRS: tuple[str, ...] = ()             # what may follow a placeholder to make its statement parse
    OPERAND: str = " x"                       # stands for an operand, to ask whether typed text is whole
    VALUE_SHAPES: dict = {}                   # valued type -> the regex its value (or a name's part) matches

    def __repr__(self) -> str:
        return f"<Language {self.id}>"

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other) -> bool:
        return isinstance(other, Language) and other.id == self.id

    # ---------------------------------------------------------------- parsing and the tree
    def new_parser(self):
        raise NotImplementedError

    def parse(self, source: bytes, parser=None):
        return (parser or self.new_parser()).parse(source)

    def type_key(self, node) -> str:
        raise NotImplementedError

    def convert(self, node, field_name: str = "") -> Node:
        raise NotImplementedError

    def base_type(self, type_key: str) -> str:
        return base_type(type_key)

    def kind_of(self, type_key: str) -> str:
        """"valued", "fixed" or "nonterminal"."""
        base = base_type(type_key)
        return "valued" if base in self.VALUED else "fixed" if base in self.FIXED else "nonterminal"

    def subtokens(self, type_key: str, value: str) -> list[str]:
        raise NotImplementedError

    def join_value(self, type_key: str, parts: list[str]) -> str:
        raise NotImplementedError

    def identifier_counts(self, root, start: int = 0, end: int | None = None) -> list[tuple[str, int]]:
        raise NotImplementedError

    def comments(self, root, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """The byte ranges of the comments under `root` starting in bytes start..end (a token model
        reads code without them: model/fim_eval.py's `function_code`)."""
        return []

    # ---------------------------------------------------------------- printing
    def print_node(self, node: Node) -> str:
        raise NotImplementedError

    def parse_expression(self, text: str, parser=None) -> Node | None:
        raise NotImplementedError

    def round_trips(self, node: Node, parser=None) -> bool:
        try:
            text = self.print_node(node)
        except (Unprintable, IndexError, StopIteration):
            return False
        back = self.parse_expression(text, parser)
        return back is not None and back.key() == node.key()

    def fixed_text(self, type_key: str) -> str:
        """How a fixed terminal prints (its type when the printer has no text for it)."""
        return base_type(type_key)

    # ---------------------------------------------------------------- holes and the search
    def target_root_type(self, type_key: str) -> bool:
        """May a hole's root (a dataset target, a search's answer) be of this type?"""
        return base_type(type_key) in self.EXPRESSION_TYPES

    def starts_block(self, source: bytes, at: int) -> bool:
        """Does the line at `at` begin a top-level statement (a window of a big buffer starts there)?"""
        raise NotImplementedError

    def min_children(self, type_key: str) -> int:
        """The children a node of this type needs before it prints."""
        return 0

    def sentinel(self, parent_type: str, k: int, marker: str) -> Node:
        """A stand-in for child k of an open node, printing as `marker`."""
        return Node(self.IDENTIFIER, value=marker)

    def set_fields(self, node: Node) -> None:
        """Fill in the field names the printer needs on a generated node's children."""

    # ---------------------------------------------------------------- typed text
    def tokens(self, text: str) -> list:
        raise NotImplementedError

    def typed_tokens(self, text: str) -> tuple[list[str], bool]:
        raise NotImplementedError

    def closers(self, text: str) -> str:
        raise NotImplementedError

    def typed_kind(self, type_key: str, typed_last: str = "", partial: bool = False) -> str:
        return type_key

    def value_starts(self, type_key: str, text: str, partial: bool) -> bool:
        return True

    def partial_literal_start(self, text: str) -> int | None:
        return None

    def lone_number(self, text: str) -> bool:
        return False

    def open_string(self, text: str) -> str:
        """The quote that closes the string literal `text` ends inside (the user is typing it), else "":
        such a string is answered closed, as typed, where the model cannot spell it."""
        return ""

    def is_string(self, token: str) -> bool:
        """Is `token` one string literal (closed, or open as one being typed or spelled)?"""
        return False

    def ends_in_keyword(self, text: str) -> bool:
        return False

    def interpolation(self, before: str, after: str) -> tuple[int, int, int, int] | None:
        """Where the cursor, between `before` and `after` (its line), is inside an expression
        embedded in a string literal (an f-string's braces): (the literal's start, the expression's
        start) as offsets in `before`, (the expression's end, the literal's end) as offsets in
        `after`; else None.  The model's tree has the literal as one value: the hole is the
        embedded expression's, put where the literal is."""
        return None

    def literal_group(self, tree, start: int) -> tuple[int, int] | None:
        """In a parsed buffer (a tree-sitter tree), the byte range of the string literals written
        one after the other into one value with the literal that starts at `start` (`"keys: " f"{k}"`
        in Python), which the model's tree holds as one value; None where that literal stands alone."""
        return None

    def space_triggers(self, before: str) -> bool:
        return False

    def operand_space(self, before: str) -> str:
        """What the printer writes between `before`, typed up to an empty operand, and that operand
        (answers of the operand's hole repeat the typed text before their own): "" where unknown."""
        return ""

    def redundant(self, node: Node) -> bool:
        """Does the model's tree `node` hold an expression nobody writes (the same operand on both
        sides of a logical operator, say)?  The search does not count such a tree among its answers,
        and drops a partial tree as soon as it holds one: `node` may have open nodes whose missing
        parts are stand-ins (`sentinel`, each with its own marker), and where the answer is True it
        must stay True whatever the stand-ins become."""
        return False

    # ---------------------------------------------------------------- code search
    def docstring(self, fn):
        """The tree-sitter node documenting function `fn` (a statement of its body), or None: code
        search pairs it with the function (as CodeSearchNet does); a language without one gives none."""
        return None

    def docstring_text(self, doc) -> str:
        """The text of `docstring`'s node, without its quotes or comment markers."""
        return doc.text.decode("utf8", "replace")

    def definition_name(self, node) -> str | None:
        """The name a function or `SCOPE_TYPES` node defines (its "name" field), else None."""
        if node.type not in self.FUNCTION_TYPES and node.type not in self.SCOPE_TYPES:
            return None
        name = node.child_by_field_name("name")
        return None if name is None else name.text.decode("utf8", "replace")
