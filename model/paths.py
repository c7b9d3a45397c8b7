"""AST paths around a hole (paper sections 2 and 3.1).

A program is a `FlatTree`: the nodes of the model's tree in depth-first
preorder.  The hole is the subtree rooted at node `h`; its parent `p` is the
node the first generation step expands.  Generating the target walks it
depth-first (`target_steps`): every node is predicted as a child of its parent,
every nonterminal ends with EOS-node, every valued terminal's subtokens follow
it, ending with EOS-token.

At step t the model sees S_t, the paths from every leaf created before t to the
parent being expanded, pi_t, and the root path R_t.  A path is a list of nodes
(type, child index), leaf first.  For a context leaf l, every path to a node in
the hole passes through p, so

    path(l -> pi_t) = path(l -> p)  +  chain(p -> pi_t) without p

The first part, the *prefix*, is fixed for the whole request; only the short
suffix inside the hole changes from step to step.  The model runs its LSTM over
the prefix once and continues the cached state through the suffix.  Paths from
leaves generated inside the hole are short and are encoded whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from anycode.grammars import Language, Node
from anycode.model.vocab import EMPTY, EOS_NODE, EOS_TOK, MAX_CHILD_INDEX


def chain_up(parent: list[int], i: int) -> list[int]:
    """i, its parent, ..., the root, in a tree given by its parent array (-1 at the root)."""
    out = []
    while i != -1:
        out.append(i)
        i = parent[i]
    return out


def path_between(parent: list[int], a: int, b: int) -> list[int]:
    """Node indices from a up to the lowest common ancestor and down to b."""
    up = chain_up(parent, a)
    down = chain_up(parent, b)
    on_down = set(down)
    k = 0
    while up[k] not in on_down:
        k += 1
    lca = up[k]
    return up[: k + 1] + list(reversed(down[: down.index(lca)]))


@dataclass
class FlatTree:
    types: list[str]
    child_index: list[int]
    parent: list[int]          # -1 for the root
    depth: list[int]
    end: list[int]             # one past the last node of each subtree
    values: list[str | None]
    start_byte: list[int] = field(default_factory=list)
    end_byte: list[int] = field(default_factory=list)
    # the identifiers of the whole file (or buffer) this tree was cut from, with their counts, in order of
    # first occurrence: those outside the tree are a copy source (features.outside_identifiers)
    file_identifiers: list[tuple[str, int]] = field(default_factory=list)
    # the language of the tree: how its types are kinds and its values subtokens
    lang: Language | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_node(cls, root: Node, lang: Language) -> "FlatTree":
        t = cls([], [], [], [], [], [], [], [], lang=lang)

        def add(node: Node, parent: int, index: int, depth: int):
            i = len(t.types)
            t.types.append(node.type)
            t.child_index.append(min(index, MAX_CHILD_INDEX))
            t.parent.append(parent)
            t.depth.append(depth)
            t.end.append(-1)
            t.values.append(node.value)
            t.start_byte.append(node.start_byte)
            t.end_byte.append(node.end_byte)
            for j, c in enumerate(node.children):
                add(c, i, j, depth + 1)
            t.end[i] = len(t.types)

        # recursion depth is bounded by the tree depth; deep trees are rejected upstream
        add(root, -1, 0, 0)
        return t

    def __len__(self) -> int:
        return len(self.types)

    def is_leaf(self, i: int) -> bool:
        return self.end[i] == i + 1

    def children(self, i: int) -> list[int]:
        out, j = [], i + 1
        while j < self.end[i]:
            out.append(j)
            j = self.end[j]
        return out

    def chain_up(self, i: int) -> list[int]:
        """i, its parent, ..., the root."""
        return chain_up(self.parent, i)

    def in_subtree(self, i: int, root: int) -> bool:
        return root <= i < self.end[root]

    def path(self, a: int, b: int) -> list[int]:
        """Node indices from a up to the lowest common ancestor and down to b."""
        return path_between(self.parent, a, b)

    def node(self, i: int) -> tuple[str, int]:
        return self.types[i], self.child_index[i]

    def leaf_value(self, i: int) -> list[str]:
        v = self.values[i]
        return self.lang.subtokens(self.types[i], v) if v is not None else [EMPTY]


# ---------------------------------------------------------------- generation steps


@dataclass
class Step:
    parent: int                # pi_t: index of the node being expanded
    child_index: int           # index of a_t among pi_t's children
    label: str                 # a node type, EOS_NODE, a value symbol or EOS_TOK
    is_value: bool             # True when pi_t is a valued terminal
    creates: int = -1          # the node a node step creates (-1 for EOS and value steps)


def target_steps(tree: FlatTree, h: int, whole_tokens: set[str] | frozenset = frozenset()) -> list[Step]:
    """The steps that generate the subtree at h, depth-first.

    A terminal whose whole value is a token of the context is labelled with that
    token in one step (the paper trains to prefer copying whole tokens)."""
    steps: list[Step] = []

    def expand(n: int):
        kind = tree.lang.kind_of(tree.types[n])
        if kind == "valued":
            v = tree.values[n] or ""
            parts = [v] if v in whole_tokens else tree.lang.subtokens(tree.types[n], v)
            for j, s in enumerate(parts):
                steps.append(Step(n, min(j, MAX_CHILD_INDEX), s, True))
            steps.append(Step(n, min(len(parts), MAX_CHILD_INDEX), EOS_TOK, True))
        elif kind == "nonterminal":
            kids = tree.children(n)
            for c in kids:
                steps.append(Step(n, tree.child_index[c], tree.types[c], False, c))
                expand(c)
            steps.append(Step(n, min(len(kids), MAX_CHILD_INDEX), EOS_NODE, False))

    steps.append(Step(tree.parent[h], tree.child_index[h], tree.types[h], False, h))
    expand(h)
    return steps


# ---------------------------------------------------------------- context paths


@dataclass
class ContextPaths:
    """What a request's context gives every step: the prefixes of the kept
    context leaves and the root path down to p."""
    leaves: list[int]              # kept context leaves, nearest first
    prefixes: list[list[int]]      # node indices, leaf first, ending at p
    root_prefix: list[int]         # node indices from the root down to p
    dropped_far: int = 0           # leaves beyond the count cap
    dropped_long: int = 0          # leaves whose path exceeds the length cap


def context_paths(tree: FlatTree, h: int, max_paths: int = 200, max_length: int = 24) -> ContextPaths:
    p = tree.parent[h]
    if p < 0:
        raise ValueError("the hole must have a parent")
    p_chain = tree.chain_up(p)                 # p ... root
    depth_of = {n: k for k, n in enumerate(p_chain)}
    candidates = []
    for leaf in range(len(tree)):
        if not tree.is_leaf(leaf) or tree.in_subtree(leaf, h):
            continue
        up = []
        n = leaf
        while n not in depth_of:
            up.append(n)
            n = tree.parent[n]
        prefix = up + list(reversed(p_chain[: depth_of[n] + 1]))
        candidates.append((len(prefix), abs(leaf - h), leaf, prefix))
    too_long = [c for c in candidates if c[0] > max_length]
    kept = sorted((c for c in candidates if c[0] <= max_length), key=lambda c: (c[0], c[1]))
    far = max(0, len(kept) - max_paths)
    kept = sorted(kept[:max_paths], key=lambda c: c[2])   # back to source order
    return ContextPaths([c[2] for c in kept], [c[3] for c in kept], list(reversed(p_chain)), far, len(too_long))


# ---------------------------------------------------------------- paths at a step (reference)


@dataclass
class StepPaths:
    paths: list[tuple[list[str], list[tuple[str, int]]]]   # (leaf value subtokens, nodes leaf->pi)
    root_path: list[tuple[str, int]]                        # nodes root->pi
    child_index: int


def generated_leaves(tree: FlatTree, h: int, steps: list[Step], t: int) -> dict[int, list[str]]:
    """Leaves inside the hole created before step t, with the value parts generated so far.

    A terminal is a leaf from the step that creates it; a nonterminal only once
    its EOS-node has closed it with no children (decoding cannot know earlier)."""
    made: dict[int, list[str]] = {}
    has_child: set[int] = set()
    for s in steps[:t]:
        if s.creates >= 0:
            has_child.add(s.parent)
            if tree.lang.kind_of(tree.types[s.creates]) != "nonterminal":
                made[s.creates] = []
        elif s.is_value:
            if s.label != EOS_TOK:
                made[s.parent].append(s.label)
        elif s.parent not in has_child:
            made[s.parent] = []
    return made


def step_paths(tree: FlatTree, h: int, steps: list[Step], t: int, ctx: ContextPaths) -> StepPaths:
    """S_t, R_t and the child index at step t, spelled out node by node.

    The reference the model's cached computation is tested against."""
    step = steps[t]
    pi = step.parent
    suffix = list(reversed(tree.chain_up(pi)))[len(ctx.root_prefix):]   # below p, down to pi
    paths = []
    for leaf, prefix in zip(ctx.leaves, ctx.prefixes):
        paths.append((tree.leaf_value(leaf), [tree.node(n) for n in prefix + suffix]))
    for leaf, parts in generated_leaves(tree, h, steps, t).items():
        value = (value_subtokens(tree.lang, tree.types[leaf], parts) if tree.lang.kind_of(tree.types[leaf]) == "valued"
                 else [EMPTY])
        paths.append((value, [tree.node(n) for n in tree.path(leaf, pi)]))
    root = [tree.node(n) for n in ctx.root_prefix + suffix]
    return StepPaths(paths, root, step.child_index)


def value_subtokens(lang: Language, type_key: str, parts: list[str]) -> list[str]:
    """The subtokens of a value generated as `parts` (whole tokens or subtokens)."""
    if not parts:
        return [EMPTY]
    return lang.subtokens(type_key, lang.join_value(type_key, parts))
