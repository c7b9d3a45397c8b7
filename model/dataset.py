"""`anycode dataset build`: any-code completion examples from the corpus.

The protocol of the paper (section 4.1), as ../shared/bench/holebench.py also
applies it: a target is an expression larger than a single AST node inside a
function of at most 20 lines; functions or files containing "test" are
skipped; targets that appear as-is in the rest of their function are dropped.
The context is the whole function.

Functions of the train split that duplicate a dev or test function (the same
`function_key`: its tokens without layout, comments or docstring)
are dropped, so held-out metrics never score code the model trained on.

Shards are vocabulary-free: each holds its own string table, the functions'
trees as flat arrays, and the examples as (function, hole node) pairs, so
training reads them without parsing again.  The vocabulary is built from the
train split's counts afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.grammars import Language, Node
from anycode.model.grammar_table import GrammarTable
from anycode.model.paths import FlatTree
from anycode.model.vocab import Vocab
from anycode.model.workers import process_pool

MAX_FUNCTION_LINES = 20
MAX_TARGET_CHARS = 120
MAX_FILE_BYTES = 1_000_000
FILES_PER_SHARD = 400
SHARD_VERSION = 3                 # 3: each file's identifier counts (the outside-the-function copy source)
DEDUP_VERSION = 2                 # bump when function_key changes (2: the function's name is kept)
HELD_OUT = ("dev", "test")
HELD_OUT_DUPLICATE = "duplicate of a dev/test function"

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def ast_size(node: Node, lang: Language) -> int:
    if lang.base_type(node.type) in lang.ATOM_TYPES:
        return 1
    return 1 + sum(ast_size(c, lang) for c in node.children)


def is_hole_position(node: Node, parent: Node, lang: Language) -> bool:
    ptype = lang.base_type(parent.type)
    if ptype == lang.STATEMENT:
        return False  # a whole statement, not a hole inside one
    return (ptype, node.field) not in lang.HOLE_FORBIDDEN and (ptype, "") not in lang.HOLE_FORBIDDEN


# ---------------------------------------------------------------- extraction


@dataclass
class FileResult:
    functions: list[tuple[FlatTree, list[int], int]]   # tree, hole node indices, first line
    skipped: Counter
    identifiers: list[tuple[str, int]] = field(default_factory=list)   # the file's, Language.identifier_counts
    duplicate_examples: int = 0       # examples of the functions dropped as duplicates of dev/test functions


def function_key(fn, lang: Language) -> int:
    """A 64-bit hash of a tree-sitter function node's normalized tokens: its leaves in order,
    with atoms (identifiers, numbers, whole string literals) as their text, and no comments
    (`lang.DROPPED`), docstring or whitespace.  Two functions that differ only in layout, comments
    or docstring get the same key; a different identifier (the function's name too) or literal
    gives another: with the name abstracted, generic one-liners such as `def x(self): return
    self._x` of any name would count as copies of each other."""
    doc = lang.docstring(fn)
    skip = (doc.start_byte, doc.end_byte) if doc is not None else None
    h = hashlib.blake2b(digest_size=8)
    stack = [fn]
    while stack:
        n = stack.pop()
        span = (n.start_byte, n.end_byte)
        if n.type in lang.DROPPED or (span == skip and n.type == doc.type):
            continue
        if n.child_count == 0 or n.type in lang.ATOM_TYPES:
            h.update(n.text)
            h.update(b"\0")
        else:
            stack.extend(reversed(n.children))
    return int.from_bytes(h.digest(), "little")


def file_function_keys(path: str, lang: Language, parser=None) -> list[int]:
    """The `function_key` of every function of a file (any length, nested ones too); none for a
    file the dataset cannot read (unreadable, huge, binary, not UTF-8)."""
    try:
        source = Path(path).read_bytes()
        source.decode("utf8")
    except (OSError, UnicodeDecodeError):
        return []
    if len(source) > MAX_FILE_BYTES or b"\0" in source:
        return []
    tree = (parser or lang.new_parser()).parse(source)
    return [function_key(n, lang) for n in function_nodes(tree.root_node, lang)]


def function_nodes(root, lang: Language):
    """Every function node under `root` (tree-sitter), nested ones too, last in the file first."""
    stack = [root]
    while stack:
        n = stack.pop()
        stack.extend(n.children)
        if n.type in lang.FUNCTION_TYPES:
            yield n


def targets_in_function(fn: Node, source: bytes, lang: Language) -> list[Node]:
    out = []
    stack = [(fn, None)]
    while stack:
        node, parent = stack.pop()
        stack.extend((c, node) for c in node.children)
        if parent is None or not lang.target_root_type(node.type):
            continue
        if ast_size(node, lang) < 2 or not is_hole_position(node, parent, lang):
            continue
        raw = source[node.start_byte: node.end_byte]
        if b"\n" in raw:
            continue
        target = raw.decode("utf8", "replace")
        if len(target) > MAX_TARGET_CHARS:
            continue
        rest = (source[fn.start_byte: node.start_byte] + source[node.end_byte: fn.end_byte]).decode("utf8", "replace")
        if normalize(target) in normalize(rest):
            continue
        out.append(node)
    return out


def extract_file(path: str, parser=None, name: str | None = None,
                 max_function_lines: int = MAX_FUNCTION_LINES, *, lang: Language,
                 drop_keys: frozenset[int] | set[int] = frozenset()) -> FileResult:
    """Examples of one file of language `lang`; `name` (the path inside the corpus) is what the "test" rule reads;
    functions longer than `max_function_lines` are skipped (the dataset's protocol: 20), and so are
    functions whose `function_key` is in `drop_keys` (the dev and test functions, for train)."""
    skipped: Counter = Counter()
    try:
        source = Path(path).read_bytes()
    except OSError:
        skipped["unreadable"] += 1
        return FileResult([], skipped)
    if len(source) > MAX_FILE_BYTES:
        skipped["huge file"] += 1
        return FileResult([], skipped)
    if b"\0" in source:
        skipped["binary file"] += 1
        return FileResult([], skipped)
    try:
        source.decode("utf8")
    except UnicodeDecodeError:
        skipped["not utf-8"] += 1
        return FileResult([], skipped)
    if "test" in (name if name is not None else path).lower():
        skipped["test file"] += 1
        return FileResult([], skipped)
    parser = parser or lang.new_parser()
    tree = parser.parse(source)
    if tree.root_node.has_error:
        skipped["does not parse"] += 1
        return FileResult([], skipped)
    functions = []
    duplicate_examples = 0
    identifiers = lang.identifier_counts(tree.root_node)
    for n in function_nodes(tree.root_node, lang):
        if n.end_point[0] - n.start_point[0] + 1 > max_function_lines:
            skipped["long function"] += 1
            continue
        if "test" in n.text.decode("utf8", "replace").lower():
            skipped["test function"] += 1
            continue
        fn = lang.convert(n)
        targets = targets_in_function(fn, source, lang)
        if not targets:
            skipped["function without targets"] += 1
            continue
        if drop_keys and function_key(n, lang) in drop_keys:
            skipped[HELD_OUT_DUPLICATE] += 1
            duplicate_examples += len(targets)
            continue
        flat = FlatTree.from_node(fn, lang)
        flat.file_identifiers = identifiers
        index = {(s, e, t): i for i, (s, e, t) in enumerate(zip(flat.start_byte, flat.end_byte, flat.types))}
        holes = sorted(index[(t.start_byte, t.end_byte, t.type)] for t in targets)
        functions.append((flat, holes, n.start_point[0] + 1))
    return FileResult(functions, skipped, identifiers if functions else [], duplicate_examples)


# ---------------------------------------------------------------- shards


class StringTable:
    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, s: str) -> int:
        i = self.ids.get(s)
        if i is None:
            i = self.ids[s] = len(self.ids)
        return i

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        encoded = [s.encode("utf8", "surrogatepass") for s in self.ids]
        off = np.zeros(len(encoded) + 1, dtype=np.int64)
        off[1:] = np.cumsum([len(b) for b in encoded])
        return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), off


def write_shard(path: Path, results: list[tuple[str, FileResult]], lang: Language, dedup: str | None = None,
                max_function_lines: int = MAX_FUNCTION_LINES) -> dict:
    """Write a shard: first the arrays (.npz), then its .json, each to a temporary name renamed
    into place, so a shard whose .json exists is complete (a killed build leaves none half-written)."""
    strings = StringTable()
    n_type, n_idx, n_parent, n_end, n_depth, n_value = [], [], [], [], [], []
    f_start, f_file, f_line, e_func, e_hole = [0], [], [], [], []
    i_start, i_str, i_count = [0], [], []
    files: list[str] = []
    skipped: Counter = Counter()
    duplicate_examples = 0
    type_counts: Counter = Counter()
    sub_counts: Counter = Counter()
    table = GrammarTable.empty()
    for file_name, res in results:
        skipped.update(res.skipped)
        duplicate_examples += res.duplicate_examples
        file_id = len(files)
        files.append(file_name)
        for name, count in res.identifiers:
            i_str.append(strings(name))
            i_count.append(count)
        i_start.append(len(i_str))
        for flat, holes, line in res.functions:
            fid = len(f_file)
            for h in holes:
                e_func.append(fid)
                e_hole.append(h)
            n_type.extend(strings(t) for t in flat.types)
            n_idx.extend(flat.child_index)
            n_parent.extend(flat.parent)
            n_end.extend(flat.end)
            n_depth.extend(flat.depth)
            n_value.extend(-1 if v is None else strings(v) for v in flat.values)
            f_start.append(len(n_type))
            f_file.append(file_id)
            f_line.append(line)
            type_counts.update(flat.types)
            table.add_tree(flat)
            for t, v in zip(flat.types, flat.values):
                if v is not None:
                    sub_counts.update(lang.subtokens(t, v))
    blob, off = strings.arrays()
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, str_blob=blob, str_off=off,
        n_type=np.array(n_type, np.int32), n_idx=np.array(n_idx, np.uint8),
        n_parent=np.array(n_parent, np.int32), n_end=np.array(n_end, np.int32),
        n_depth=np.array(n_depth, np.int16), n_value=np.array(n_value, np.int32),
        f_start=np.array(f_start, np.int64), f_file=np.array(f_file, np.int32),
        f_line=np.array(f_line, np.int32), e_func=np.array(e_func, np.int32),
        e_hole=np.array(e_hole, np.int32),
        i_start=np.array(i_start, np.int64), i_str=np.array(i_str, np.int32), i_count=np.array(i_count, np.int32),
    )
    os.replace(tmp, path)
    meta = {"version": SHARD_VERSION, "language": lang.id, "files": files, "functions": len(f_file), "examples": len(e_func),
            "skipped": dict(skipped), "type_counts": dict(type_counts), "subtoken_counts": dict(sub_counts),
            "grammar": table.to_dict(), "dedup": dedup, "duplicate_examples": duplicate_examples,
            "max_function_lines": max_function_lines}
    meta_tmp = path.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, path.with_suffix(".json"))
    return meta


class ShardError(RuntimeError):
    """A shard that cannot be read: the message names the file."""


class Shard:
    """A shard loaded for reading: trees come back as FlatTrees."""

    def __init__(self, path: Path):
        try:
            with np.load(path) as z:
                self.arrays = {k: z[k] for k in z.files}
            blob, off = self.arrays["str_blob"].tobytes(), self.arrays["str_off"]
            self.strings = [blob[off[i]: off[i + 1]].decode("utf8", "surrogatepass") for i in range(len(off) - 1)]
            missing = {"e_func", "e_hole", "f_start", "n_type"} - set(self.arrays)
            if missing:
                raise ValueError(f"no {', '.join(sorted(missing))}")
        except Exception as e:  # noqa: BLE001 - zip, zlib, pickle, EOF and decode errors alike
            raise ShardError(f"error: {path} is not a readable shard ({type(e).__name__}: {e}); a partial copy or "
                             f"a corrupt file? Unpack or build it again (anycode dataset build)") from e
        try:
            self.meta = json.loads(Path(path).with_suffix(".json").read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"error: {Path(path).with_suffix('.json')} is missing or corrupt ({e}); unpack or "
                             f"build the shard again") from e
        self.lang = grammars.of_config(self.meta)   # shards from before the field are of the default language

    def __len__(self) -> int:
        return len(self.arrays["e_func"])

    @property
    def num_functions(self) -> int:
        return len(self.arrays["f_file"])

    def tree(self, f: int) -> FlatTree:
        a = self.arrays
        lo, hi = int(a["f_start"][f]), int(a["f_start"][f + 1])
        s = self.strings
        file = int(a["f_file"][f])
        ilo, ihi = int(a["i_start"][file]), int(a["i_start"][file + 1])
        return FlatTree(
            types=[s[i] for i in a["n_type"][lo:hi]],
            child_index=a["n_idx"][lo:hi].astype(int).tolist(),
            parent=a["n_parent"][lo:hi].tolist(),
            depth=a["n_depth"][lo:hi].astype(int).tolist(),
            end=a["n_end"][lo:hi].tolist(),
            values=[None if i < 0 else s[i] for i in a["n_value"][lo:hi]],
            file_identifiers=[(s[i], int(n)) for i, n in zip(a["i_str"][ilo:ihi], a["i_count"][ilo:ihi])],
            lang=self.lang,
        )

    def example(self, i: int) -> tuple[FlatTree, int]:
        return self.tree(int(self.arrays["e_func"][i])), int(self.arrays["e_hole"][i])

    def source_of(self, f: int) -> tuple[str, int]:
        return self.meta["files"][int(self.arrays["f_file"][f])], int(self.arrays["f_line"][f])


def shard_paths(data_dir: Path, split: str) -> list[Path]:
    return sorted((Path(data_dir) / split).glob("shard-*.npz"))


def data_language(data_dir: Path) -> Language:
    """The language of a dataset: as its first shard records it (the default for older shards or none)."""
    for split in ("train", "dev", "test"):
        for p in shard_paths(data_dir, split):
            try:
                return grammars.of_config(json.loads(p.with_suffix(".json").read_text()))
            except (OSError, ValueError):
                continue
    return grammars.get(grammars.DEFAULT)


# ---------------------------------------------------------------- build


_DROP_KEYS: frozenset[int] = frozenset()   # a worker's copy of the held-out function keys (train only)
_MAX_LINES = MAX_FUNCTION_LINES             # and of the build's function length limit


def _init_worker(drop_keys: frozenset[int], max_lines: int = MAX_FUNCTION_LINES) -> None:
    global _DROP_KEYS, _MAX_LINES
    _DROP_KEYS, _MAX_LINES = drop_keys, max_lines


def _extract_many(root: str, names: list[str], lang_id: str) -> list[tuple[str, FileResult]]:
    lang = grammars.get(lang_id)
    parser = lang.new_parser()
    sys.setrecursionlimit(10000)
    return [(n, extract_file(os.path.join(root, n), parser, n, _MAX_LINES, lang=lang, drop_keys=_DROP_KEYS))
            for n in names]


def _keys_of_many(root: str, names: list[str], lang_id: str) -> list[int]:
    lang = grammars.get(lang_id)
    parser = lang.new_parser()
    sys.setrecursionlimit(10000)
    return [k for n in names for k in file_function_keys(os.path.join(root, n), lang, parser)]


def held_out_keys(corpus_dir: Path, out_dir: Path, jobs: int, lang: Language,
                  also: tuple[Path, ...] = ()) -> tuple[frozenset[int], str]:
    """The `function_key`s of every function of the dev and test files, and a digest naming
    that set (kept in each train shard's .json: a train shard built against another held-out
    set is rebuilt).  `also`: other corpora whose dev and test files are held out too (a held-out
    list of its own, model/corpora/python-scripts.tsv).  Cached in OUT/heldout-functions.npz,
    keyed by the held-out files' contents."""
    roots = [Path(corpus_dir), *map(Path, also)]
    files = [(r, split, n) for r in range(len(roots)) for split in HELD_OUT
             for n in list_split_files(roots[r], split, lang)]
    h = hashlib.sha1(f"{DEDUP_VERSION} {lang.id}".encode())
    for r, split, n in files:
        h.update(f"\n{r}:{split}/{n} ".encode() if r else f"\n{split}/{n} ".encode())
        h.update(hashlib.sha1((roots[r] / split / n).read_bytes()).digest())
    source_key = h.hexdigest()
    cache = Path(out_dir) / "heldout-functions.npz"
    try:
        with np.load(cache) as z:
            if str(z["source_key"]) == source_key:
                keys = z["keys"]
                return frozenset(keys.tolist()), str(z["digest"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        pass
    keys_list: list[int] = []
    with process_pool(jobs) as pool:
        for r, root_dir in enumerate(roots):
            for split in HELD_OUT:
                names = [n for q, s, n in files if q == r and s == split]
                parts = [names[i::jobs] for i in range(jobs)]
                root = str(root_dir / split)
                for part in pool.map(_keys_of_many, [root] * jobs, parts, [lang.id] * jobs):
                    keys_list.extend(part)
    keys = np.unique(np.array(keys_list, dtype=np.uint64))
    digest = hashlib.sha1(keys.tobytes()).hexdigest()[:16]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, keys=keys, digest=np.array(digest), source_key=np.array(source_key))
    os.replace(tmp, cache)
    return frozenset(keys.tolist()), digest


REQUIRED_ARRAYS = ("str_blob", "str_off", "n_type", "n_idx", "n_parent", "n_end", "n_depth", "n_value", "f_start",
                   "f_file", "f_line", "e_func", "e_hole", "i_start", "i_str", "i_count")


def check_shard(path: Path, meta: dict) -> None:
    """Raise ShardError naming `path` when a finished shard (its .json is there) cannot be read
    whole: truncated, corrupt (a CRC that does not match), or missing arrays."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC check")
            names = {n.removesuffix(".npy") for n in zf.namelist()}
        missing = [a for a in REQUIRED_ARRAYS if a not in names]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        with np.load(path) as z:
            if len(z["f_file"]) != meta["functions"] or len(z["e_func"]) != meta["examples"]:
                raise ValueError(f"{len(z['f_file'])} functions and {len(z['e_func'])} examples where its .json "
                                 f"says {meta['functions']} and {meta['examples']}")
    except Exception as e:  # noqa: BLE001 - zip, zlib, EOF and OS errors alike
        raise ShardError(f"error: {path} is not a readable shard ({type(e).__name__}: {e}); a partial copy or a "
                         f"corrupt file? Delete it and its .json and run `anycode dataset build` again: the build "
                         f"rebuilds it and reuses every other finished shard") from e


def read_shard_meta(meta_path: Path) -> dict:
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ShardError(f"error: {meta_path} is corrupt ({type(e).__name__}: {e}); delete it and its .npz and run "
                         f"`anycode dataset build` again") from e


def list_split_files(corpus_dir: Path, split: str, lang: Language) -> list[str]:
    root = Path(corpus_dir) / split
    suffix = lang.extensions[0]       # the language's source files (its first suffix: not stubs)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*" + suffix) if p.is_file())


def build_split(corpus_dir: Path, out_dir: Path, split: str, jobs: int, lang: Language,
                drop: tuple[frozenset[int], str] | None = None, files_per_shard: int = FILES_PER_SHARD,
                max_function_lines: int = MAX_FUNCTION_LINES) -> list[dict]:
    """Build (or finish building) one split's shards.  `drop` is (function keys, their digest):
    the functions to leave out, for train the dev and test ones (`held_out_keys`);
    `max_function_lines`: longer functions give no examples.  A shard whose .npz and .json are
    both there, of this format, language, `drop` digest and function length limit, is reused
    after `check_shard`; the others are (re)built, so a killed build continues where it stopped."""
    from tqdm import tqdm

    drop_keys, dedup = drop if drop is not None else (frozenset(), None)
    files = list_split_files(corpus_dir, split, lang)
    out = Path(out_dir) / split
    out.mkdir(parents=True, exist_ok=True)
    chunks = [files[i: i + files_per_shard] for i in range(0, len(files), files_per_shard)]
    metas: list[dict] = []
    todo = []
    expected: set[Path] = set()
    for k, chunk in enumerate(chunks):
        key = hashlib.sha1("\n".join(chunk).encode()).hexdigest()[:12]
        path = out / f"shard-{k:04d}-{key}.npz"
        expected |= {path, path.with_suffix(".json")}
        meta_path = path.with_suffix(".json")
        meta = read_shard_meta(meta_path) if path.exists() and meta_path.exists() else None
        if meta is not None and meta.get("version") == SHARD_VERSION and grammars.of_config(meta) == lang \
                and meta.get("dedup") == dedup \
                and meta.get("max_function_lines", MAX_FUNCTION_LINES) == max_function_lines:
            check_shard(path, meta)
            metas.append(meta)
        else:
            todo.append((path, chunk))
    for p in out.glob("shard-*"):
        if p not in expected:
            p.unlink()  # from another corpus, an older format or an interrupted write: never read as data
    if metas:
        print(f"{split}: reusing {len(metas)} finished shards", file=sys.stderr)
    with process_pool(jobs, initializer=_init_worker, initargs=(drop_keys, max_function_lines)) as pool, \
            tqdm(total=len(todo), desc=f"{split} shards", unit="shard") as bar:
        # split each shard's files over the workers, then write the shard here
        for path, chunk in todo:
            parts = [chunk[i::jobs] for i in range(jobs)]
            root = str(Path(corpus_dir) / split)
            results = [r for part in pool.map(_extract_many, [root] * jobs, parts, [lang.id] * jobs) for r in part]
            results.sort(key=lambda r: r[0])
            metas.append(write_shard(path, results, lang, dedup, max_function_lines))
            bar.update(1)
    return metas


def build_grammar_table(data_dir: Path) -> GrammarTable:
    table = GrammarTable.empty()
    for p in shard_paths(data_dir, "train"):
        table.merge(GrammarTable.from_dict(json.loads(p.with_suffix(".json").read_text())["grammar"]))
    return table


def build_vocab(data_dir: Path, size: int = 1000) -> Vocab:
    types: Counter = Counter()
    subs: Counter = Counter()
    for p in shard_paths(data_dir, "train"):
        meta = json.loads(p.with_suffix(".json").read_text())
        types.update(meta["type_counts"])
        subs.update(meta["subtoken_counts"])
    return Vocab.build(types, subs, size)


def add_parser(ap: argparse.ArgumentParser) -> None:
    """`anycode dataset build`'s arguments (model/dataset_cli.py puts build and stats together)."""
    ap.add_argument("--lang", default=grammars.DEFAULT, choices=grammars.ids())
    ap.add_argument("--corpus", type=Path, help="default: data/corpus/LANG")
    ap.add_argument("--out", type=Path, help="default: data/dataset/LANG")
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--vocab-size", type=int, default=1000)
    ap.add_argument("--files-per-shard", type=int, default=FILES_PER_SHARD)
    ap.add_argument("--max-function-lines", type=int, default=MAX_FUNCTION_LINES,
                    help=f"holes only in functions of at most this many lines (default {MAX_FUNCTION_LINES}, the "
                         f"paper's protocol); shards built with another limit are rebuilt")
    ap.add_argument("--keep-held-out-duplicates", action="store_true",
                    help="do not drop train functions that duplicate a dev or test function")
    ap.add_argument("--held-out-also", type=Path, action="append", default=[], metavar="CORPUS",
                    help="another corpus whose dev and test functions train must not hold either (e.g. "
                         "data/corpus-scripts/python, the script-like held-out list)")


def run(args) -> int:
    args.corpus = args.corpus or Path("data/corpus") / args.lang
    args.out = args.out or Path("data/dataset") / args.lang
    if not Path(args.corpus).is_dir():
        print(f"error: no corpus at {args.corpus}; run `anycode corpus fetch --lang {args.lang}` first", file=sys.stderr)
        return 2
    totals = {}
    lang = grammars.get(args.lang)
    try:
        for split in args.splits.split(","):
            drop = None
            if split not in HELD_OUT and not args.keep_held_out_duplicates:
                drop = held_out_keys(args.corpus, args.out, args.jobs, lang, tuple(args.held_out_also))
                print(f"{split}: dropping functions that duplicate one of the {len(drop[0]):,} distinct dev/test "
                      f"functions", file=sys.stderr)
            metas = build_split(args.corpus, args.out, split, args.jobs, lang, drop, args.files_per_shard,
                                args.max_function_lines)
            skipped: Counter = Counter()
            for m in metas:
                skipped.update(m["skipped"])
            totals[split] = {"files": sum(len(m["files"]) for m in metas),
                             "functions": sum(m["functions"] for m in metas),
                             "examples": sum(m["examples"] for m in metas), "skipped": dict(skipped),
                             "max_function_lines": args.max_function_lines}
            if drop is not None:
                totals[split]["held_out_duplicates"] = {
                    "functions": skipped.get(HELD_OUT_DUPLICATE, 0),
                    "examples": sum(m.get("duplicate_examples", 0) for m in metas)}
            print(f"{split}: {totals[split]}", file=sys.stderr)
    except ShardError as e:
        print(e, file=sys.stderr)
        return 2
    if "train" in args.splits.split(","):
        vocab = build_vocab(args.out, args.vocab_size)
        vocab.save(Path(args.out) / "vocab.json")
        build_grammar_table(args.out).save(Path(args.out) / "grammar.json")
        print(f"vocab: {len(vocab.node_types)} node types, {len(vocab.subtokens)} subtokens", file=sys.stderr)
    summary = Path(args.out) / "summary.json"
    try:   # the splits not built this time keep their figures
        totals = {**json.loads(summary.read_text()), **totals}
    except (OSError, ValueError):
        pass
    summary.write_text(json.dumps(totals, indent=1))
    return 0
