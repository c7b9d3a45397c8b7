"""`anycode search-data build` (model/search_cli.py): (query, function) pairs for code search, as CodeSearchNet builds them.

From every function of the corpus split that has a docstring: the query is the docstring's first
paragraph (at least 3 words), the code is the function's text without its docstring (at least 3
lines).  Functions whose name says "test" and dunder methods (constructors, `__str__`...) are left
out, as CodeSearchNet leaves them out; pairs whose code (whitespace aside) was already seen are
dropped, across splits in the order train, dev, test, so dev and test never repeat a train function.
Dev and test pairs come from the corpus's dev and test projects.

Each pair is featurized here, where tree-sitter is, for encoders that run where it is not:

- `code`: the function's subtokens in source order (identifiers split, lowercased; the words of
  string literals; numbers), the semantic side's input;
- `contexts`: code2vec path-contexts, leaf-to-leaf paths of the function's tree (without the
  docstring) between leaves at most `WINDOW` apart in source order and at most `MAX_PATH_NODES`
  nodes long, at most `MAX_CONTEXTS` of them (sampled with a seed taken from the code), each as
  (start token, path, end token); a path is its node types joined by spaces, the top node marked by a
  leading "^";
- `query`: the query's words, split and lowercased like code subtokens.

Written per split under OUT (default data/search/LANG): `{split}.pairs.jsonl.xz` (project, path,
line, qualified name, query, code) and `{split}.feat.npz` (the features as ids into the split's own
string table, ragged with offsets), and `summary.json` with the counts.  `search_pack` turns them
into fixed vocabularies and the arrays the encoders read.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import sys
import textwrap
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.grammars import Language, Node
from anycode.model.corpus import SPLITS, iter_files
from anycode.model.dataset import StringTable
from anycode.model.paths import FlatTree, path_between
from anycode.model.workers import process_pool

MIN_QUERY_WORDS = 3
MIN_CODE_LINES = 3
MAX_QUERY_CHARS = 300
MAX_CODE_SUBTOKENS = 256
MAX_QUERY_WORDS = 32
MAX_CONTEXTS = 32
MAX_PATH_NODES = 9            # code2vec's length limit of 8 edges
WINDOW = 4                    # leaves paired with the next WINDOW leaves in source order
MAX_STRING_WORDS = 4          # words of a string literal that count as its subtokens
MAX_FILE_BYTES = 1_000_000
FILES_PER_TASK = 64

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")   # words, and the parts of identifiers
_SPACE = re.compile(r"\s+")


# ---------------------------------------------------------------- words and subtokens


def words(text: str) -> list[str]:
    """Lowercased subtokens of natural-language or code text: words, identifiers split at
    underscores, case changes and digits."""
    return [w.lower() for w in _WORD.findall(text)]


def leaf_subtokens(lang: Language, type_key: str, value: str | None) -> list[str]:
    """What a leaf contributes to the function's subtokens: an identifier's parts, a string's first
    words, a number; a valueless leaf (None, True, pass...) nothing."""
    if value is None:
        return []
    base = lang.base_type(type_key)
    if base == lang.IDENTIFIER:
        return words(value)
    if base == lang.STRING:
        return words(value)[:MAX_STRING_WORDS]
    return [value.lower()] if len(value) <= 12 else []


def leaf_token(lang: Language, type_key: str, value: str | None) -> str:
    """A path end as the encoders read it: its subtokens joined by spaces, or its type."""
    subs = leaf_subtokens(lang, type_key, value)[:3]
    return " ".join(subs) if subs else "<" + lang.base_type(type_key) + ">"


# ---------------------------------------------------------------- docstrings and functions


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line (CodeSearchNet's query)."""
    para = []
    for line in doc.strip().splitlines():
        if not line.strip():
            if para:
                break
            continue
        para.append(line.strip())
    return _SPACE.sub(" ", " ".join(para)).strip()[:MAX_QUERY_CHARS]


def qualified_name(lang: Language, fn) -> str:
    """The names of the definitions around a tree-sitter function node, and its own, dotted."""
    names = []
    n = fn
    while n is not None:
        name = lang.definition_name(n)
        if name is not None:
            names.append(name)
        n = n.parent
    return ".".join(reversed(names))


def code_without_docstring(source: bytes, fn, doc) -> str:
    """The function's source, dedented, without the docstring's lines."""
    line_start = source.rfind(b"\n", 0, doc.start_byte) + 1
    line_end = source.find(b"\n", doc.end_byte)
    line_end = len(source) if line_end < 0 else line_end + 1
    text = b" " * fn.start_point[1] + source[fn.start_byte: line_start] + source[line_end: fn.end_byte]
    return textwrap.dedent(text.decode("utf8", "replace")).rstrip() + "\n"


def strip_docstring(node: Node, doc) -> Node:
    """The converted function without the converted docstring statement (found by its bytes)."""
    for n in node.walk():
        n.children = [c for c in n.children if (c.start_byte, c.end_byte) != (doc.start_byte, doc.end_byte)]
    return node


# ---------------------------------------------------------------- features


@dataclass
class Features:
    code: list[str]                                   # subtokens in source order
    contexts: list[tuple[str, str, str]]              # (start token, path, end token)
    query: list[str] = field(default_factory=list)


def path_string(tree: FlatTree, nodes: list[int]) -> str:
    """Node types along a path, space-separated (spaces inside a type, as in `is not`, become "_"),
    the top node marked with a leading "^"."""
    depth = [tree.depth[n] for n in nodes]
    top = depth.index(min(depth))
    return " ".join(("^" if k == top else "") + tree.types[n].replace(" ", "_") for k, n in enumerate(nodes))


def function_features(node: Node, lang: Language) -> Features:
    """Subtokens and path-contexts of a converted function tree (its docstring already removed)."""
    tree = FlatTree.from_node(node, lang)
    leaves = [i for i in range(len(tree)) if tree.is_leaf(i)]
    code: list[str] = []
    for i in leaves:
        code.extend(leaf_subtokens(lang, tree.types[i], tree.values[i]))
    pairs = [(a, b) for k, a in enumerate(leaves) for b in leaves[k + 1: k + 1 + WINDOW]]
    seed = zlib.crc32(" ".join(code).encode())
    if len(pairs) > 4 * MAX_CONTEXTS:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), 4 * MAX_CONTEXTS, replace=False))]
    contexts = []
    for a, b in pairs:
        nodes = path_between(tree.parent, a, b)
        if len(nodes) <= MAX_PATH_NODES:
            contexts.append((leaf_token(lang, tree.types[a], tree.values[a]), path_string(tree, nodes),
                             leaf_token(lang, tree.types[b], tree.values[b])))
    if len(contexts) > MAX_CONTEXTS:
        rng = np.random.default_rng(seed + 1)
        contexts = [contexts[i] for i in sorted(rng.choice(len(contexts), MAX_CONTEXTS, replace=False))]
    return Features(code[:MAX_CODE_SUBTOKENS], contexts)


def source_features(code: str, lang: Language, parser=None) -> Features | None:
    """Features of a function given as source text (CoSQA's, a search index's): its first function,
    or None when the text does not parse or holds none."""
    root = lang.parse(code.encode("utf8"), parser).root_node
    if root.has_error:
        return None
    stack = [root]
    while stack:
        n = stack.pop()
        if n.type in lang.FUNCTION_TYPES:
            return function_features(lang.convert(n), lang)
        stack.extend(reversed(n.named_children))
    return None


# ---------------------------------------------------------------- pairs of a file


def keep_function(name: str) -> bool:
    """CodeSearchNet's name rules: no test functions, no dunder methods."""
    short = name.rsplit(".", 1)[-1]
    return "test" not in short.lower() and not (short.startswith("__") and short.endswith("__"))


def file_pairs(path: Path, rel: str, lang: Language, parser=None) -> tuple[list[dict], Counter]:
    """Pairs (with features) of one file, and what was skipped, by reason."""
    skipped: Counter = Counter()
    try:
        source = path.read_bytes()
    except OSError:
        skipped["unreadable file"] += 1
        return [], skipped
    if len(source) > MAX_FILE_BYTES or b"\0" in source:
        skipped["huge or binary file"] += 1
        return [], skipped
    root = lang.parse(source, parser).root_node
    out = []
    stack = [root]
    while stack:
        n = stack.pop()
        stack.extend(reversed(n.named_children))
        if n.type not in lang.FUNCTION_TYPES:
            continue
        doc = lang.docstring(n)
        if doc is None:
            skipped["no docstring"] += 1
            continue
        pair = function_pair(source, n, doc, rel, lang, skipped)
        if pair is not None:
            out.append(pair)
    return out, skipped


def function_pair(source: bytes, fn, doc, rel: str, lang: Language, skipped: Counter) -> dict | None:
    """The pair of a documented tree-sitter function node, or None (the reason counted in `skipped`)."""
    name = qualified_name(lang, fn)
    if not keep_function(name):
        skipped["test or dunder"] += 1
        return None
    if fn.has_error or doc.start_point[0] == fn.start_point[0]:
        skipped["error or one-line docstring"] += 1
        return None
    query = first_paragraph(lang.docstring_text(doc))
    qwords = words(query)
    if len(query.split()) < MIN_QUERY_WORDS or len(qwords) < MIN_QUERY_WORDS:
        skipped["short query"] += 1
        return None
    code = code_without_docstring(source, fn, doc)
    if sum(1 for line in code.splitlines() if line.strip()) < MIN_CODE_LINES:
        skipped["short function"] += 1
        return None
    feats = function_features(strip_docstring(lang.convert(fn), doc), lang)
    return {"path": rel, "line": fn.start_point[0] + 1, "name": name, "query": query, "code": code,
            "f_code": feats.code, "f_ctx": feats.contexts, "f_query": qwords[:MAX_QUERY_WORDS]}


def _pairs_of_files(lang_id: str, root: str, rels: list[str]) -> tuple[list[dict], Counter]:
    lang = grammars.get(lang_id)
    parser = lang.new_parser()
    sys.setrecursionlimit(10000)
    out, skipped = [], Counter()
    for rel in rels:
        try:
            got, sk = file_pairs(Path(root) / rel, rel, lang, parser)
        except RecursionError:
            got, sk = [], Counter({"too deep": 1})
        out.extend(got)
        skipped.update(sk)
    return out, skipped


def code_key(code: str) -> bytes:
    """Dedup key: the code with whitespace removed."""
    return hashlib.blake2b(_SPACE.sub("", code).encode(), digest_size=12).digest()


# ---------------------------------------------------------------- storage


def load_strings(blob: np.ndarray, off: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    return [raw[off[i]: off[i + 1]].decode("utf8") for i in range(len(off) - 1)]


class Ragged:
    """A growing list of int lists, saved as values and offsets."""

    def __init__(self):
        self.values: list[int] = []
        self.off: list[int] = [0]

    def add(self, ids: list[int]) -> None:
        self.values.extend(ids)
        self.off.append(len(self.values))

    def save_into(self, arrays: dict, name: str) -> None:
        arrays[name] = np.array(self.values, np.int32)
        arrays[name + "_off"] = np.array(self.off, np.int64)


def write_split(out: Path, split: str, pairs: list[dict]) -> None:
    """`{split}.pairs.jsonl.xz` and `{split}.feat.npz` of a split's pairs, in their order."""
    strings = StringTable()
    query, code, ctx = Ragged(), Ragged(), Ragged()
    with lzma.open(out / f"{split}.pairs.jsonl.xz", "wt", encoding="utf8", preset=3) as fh:
        for p in pairs:
            fh.write(json.dumps({k: p[k] for k in ("project", "path", "line", "name", "query", "code")},
                                ensure_ascii=False) + "\n")
            query.add([strings(w) for w in p["f_query"]])
            code.add([strings(w) for w in p["f_code"]])
            ctx.add([strings(x) for c in p["f_ctx"] for x in c])   # 3 ids a context
    arrays: dict = {}
    for name, r in (("query", query), ("code", code), ("ctx", ctx)):
        r.save_into(arrays, name)
    arrays["strings"], arrays["strings_off"] = strings.arrays()
    np.savez_compressed(out / f"{split}.feat.npz", **arrays)


class SplitFeatures:
    """A split's features as written by `write_split`: lists of strings per pair."""

    def __init__(self, path: Path):
        z = np.load(path)
        self.strings = load_strings(z["strings"], z["strings_off"])
        self._z = {k: z[k] for k in z.files if k not in ("strings", "strings_off")}

    def __len__(self) -> int:
        return len(self._z["query_off"]) - 1

    def ids(self, name: str, i: int) -> np.ndarray:
        off = self._z[name + "_off"]
        return self._z[name][off[i]: off[i + 1]]

    def tokens(self, name: str, i: int) -> list[str]:
        return [self.strings[j] for j in self.ids(name, i)]

    def contexts(self, i: int) -> list[tuple[str, str, str]]:
        t = self.tokens("ctx", i)
        return [tuple(t[k: k + 3]) for k in range(0, len(t), 3)]


def read_pairs(out: Path, split: str):
    """The pair records of a split, in order (dicts: project, path, line, name, query, code)."""
    with lzma.open(Path(out) / f"{split}.pairs.jsonl.xz", "rt", encoding="utf8") as fh:
        for line in fh:
            yield json.loads(line)


# ---------------------------------------------------------------- build


def build_split(corpus: Path, split: str, jobs: int, seen: set[bytes], lang_id: str) -> tuple[list[dict], Counter]:
    """The split's pairs in corpus order, without codes in `seen` (which they are added to)."""
    files: list[tuple[str, str]] = []
    for project, path in iter_files(corpus, split):
        files.append((project, str(path.relative_to(corpus / split))))
    root = str(corpus / split)
    tasks = [files[i: i + FILES_PER_TASK] for i in range(0, len(files), FILES_PER_TASK)]
    pairs, skipped = [], Counter()
    with process_pool(jobs) as pool:
        for task, (got, sk) in zip(tasks, pool.map(_pairs_of_files, [lang_id] * len(tasks), [root] * len(tasks),
                                                    [[rel for _, rel in t] for t in tasks])):
            skipped.update(sk)
            project_of = dict((rel, project) for project, rel in task)
            for p in got:
                key = code_key(p["code"])
                if key in seen:
                    skipped["duplicate"] += 1
                    continue
                seen.add(key)
                p["project"] = project_of[p["path"]]
                pairs.append(p)
            print(f"\r{split}: {len(pairs)} pairs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return pairs, skipped


def add_arguments(b: argparse.ArgumentParser) -> None:
    """`anycode search-data build`'s arguments (model/search_cli.py)."""
    b.add_argument("--lang", default=grammars.DEFAULT, choices=grammars.ids())
    b.add_argument("--corpus", type=Path, help="default data/corpus/LANG")
    b.add_argument("--out", type=Path, help="default data/search/LANG")
    b.add_argument("--jobs", type=int, default=os.cpu_count() or 1)


def run(args) -> int:
    args.corpus = args.corpus or Path("data/corpus") / args.lang
    args.out = args.out or Path("data/search") / args.lang
    if not (args.corpus / "manifest.json").exists():
        print(f"error: no corpus at {args.corpus}; run `anycode corpus fetch` first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    summary = {}
    for split in SPLITS:
        pairs, skipped = build_split(args.corpus, split, args.jobs, seen, args.lang)
        write_split(args.out, split, pairs)
        summary[split] = {"pairs": len(pairs), "projects": len({p["project"] for p in pairs}),
                          "skipped": dict(skipped.most_common())}
        print(f"{split}: {summary[split]}", file=sys.stderr)
    summary["language"] = args.lang
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0
