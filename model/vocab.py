"""Vocabularies: node types and subtokens, with their special symbols."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PAD, UNK = "<pad>", "<unk>"
EOS_NODE = "<eos_node>"
EOS_TOK = "<eos_tok>"
EMPTY = "<empty>"            # the value of a leaf that has none (a fixed terminal, `()`...)

NODE_SPECIALS = (PAD, UNK, EOS_NODE)
SUBTOKEN_SPECIALS = (PAD, UNK, EOS_TOK, EMPTY)

MAX_CHILD_INDEX = 31         # child indices above this share one embedding


@dataclass
class Vocab:
    node_types: list[str]
    subtokens: list[str]

    def __post_init__(self):
        self.type_id = {t: i for i, t in enumerate(self.node_types)}
        self.sub_id = {s: i for i, s in enumerate(self.subtokens)}

    def type_of(self, t: str) -> int:
        return self.type_id.get(t, 1)

    def subtoken_of(self, s: str) -> int:
        return self.sub_id.get(s, 1)

    @classmethod
    def build(cls, type_counts: Counter, subtoken_counts: Counter, size: int = 1000) -> "Vocab":
        types = list(NODE_SPECIALS) + sorted(t for t in type_counts if t not in NODE_SPECIALS)
        subs = list(SUBTOKEN_SPECIALS) + [s for s, _ in subtoken_counts.most_common(size)
                                          if s not in SUBTOKEN_SPECIALS][: size - len(SUBTOKEN_SPECIALS)]
        return cls(types, subs)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"node_types": self.node_types, "subtokens": self.subtokens},
                                         ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        d = json.loads(Path(path).read_text())
        return cls(d["node_types"], d["subtokens"])
