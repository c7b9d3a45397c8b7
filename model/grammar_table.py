"""Which trees may be generated: a table learned from the training corpus.

For each parent type: the node types seen as its i-th child, and the child
counts it was seen with (where EOS-node may close it).  For each valued
terminal type: the shape its value must have.  Decoding uses it to refuse
impossible trees; the runtime's re-parse of every candidate is the final check.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from anycode.grammars import Language, base_type
from anycode.model.paths import FlatTree
from anycode.model.vocab import EOS_TOK, MAX_CHILD_INDEX


class GrammarTable:
    def __init__(self, children: dict[str, list[set[str]]], arities: dict[str, set[int]]):
        self.children = children          # parent type -> [types seen at child index i]
        self.arities = arities            # parent type -> child counts seen

    # ------------------------------------------------------------ building

    @classmethod
    def empty(cls) -> "GrammarTable":
        return cls(defaultdict(list), defaultdict(set))

    def add_tree(self, tree: FlatTree) -> None:
        for i in range(len(tree)):
            if tree.lang.kind_of(tree.types[i]) != "nonterminal":
                continue
            kids = tree.children(i)
            slots = self.children.setdefault(tree.types[i], [])
            for j, c in enumerate(kids):
                j = min(j, MAX_CHILD_INDEX)
                while len(slots) <= j:
                    slots.append(set())
                slots[j].add(tree.types[c])
            self.arities.setdefault(tree.types[i], set()).add(min(len(kids), MAX_CHILD_INDEX))

    def merge(self, other: "GrammarTable") -> None:
        for t, slots in other.children.items():
            mine = self.children.setdefault(t, [])
            for j, s in enumerate(slots):
                while len(mine) <= j:
                    mine.append(set())
                mine[j] |= s
        for t, a in other.arities.items():
            self.arities.setdefault(t, set()).update(a)

    # ------------------------------------------------------------ queries

    def known(self, parent_type: str) -> bool:
        return parent_type in self.arities

    def allowed_children(self, parent_type: str, index: int) -> set[str]:
        slots = self.children.get(parent_type, [])
        index = min(index, MAX_CHILD_INDEX)
        return slots[index] if index < len(slots) else set()

    def eos_allowed(self, parent_type: str, n_children: int) -> bool:
        return min(n_children, MAX_CHILD_INDEX) in self.arities.get(parent_type, ())

    def value_ok(self, type_key: str, symbol: str, position: int, lang: Language) -> bool:
        """May `symbol` be part `position` of a `type_key` terminal's value (the shapes of values are
        the language's `VALUE_SHAPES`; only names are spelled in several parts)?"""
        if symbol == EOS_TOK:
            return position > 0
        if symbol.startswith("<"):
            return False                  # padding, unknown, empty
        base = base_type(type_key)
        shape = lang.VALUE_SHAPES.get(base)
        if shape is None:
            return True
        if base == lang.IDENTIFIER:
            return shape.fullmatch(symbol) is not None
        return position == 0 and shape.fullmatch(symbol) is not None

    # ------------------------------------------------------------ storage

    def to_dict(self) -> dict:
        return {"children": {t: [sorted(s) for s in slots] for t, slots in sorted(self.children.items())},
                "arities": {t: sorted(a) for t, a in sorted(self.arities.items())}}

    @classmethod
    def from_dict(cls, data: dict) -> "GrammarTable":
        return cls({t: [set(s) for s in slots] for t, slots in data["children"].items()},
                   {t: set(a) for t, a in data["arities"].items()})

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=0))

    @classmethod
    def load(cls, path: Path) -> "GrammarTable":
        return cls.from_dict(json.loads(Path(path).read_text()))
