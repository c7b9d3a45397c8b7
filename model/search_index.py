"""`anycode search "QUERY" PATHS... [-n N]`: the functions of files and folders that best match a query.

Ranking is by the shipped encoders (model/shipped/search, or `--model DIR`, an export of
model/search_export.py): the inner product of the query's vector and each function's (featurized
without its docstring, as in training), with BM25 (bm25s) over each function's words weighed in
where the encoders' config gives it a weight and bm25s is installed.  `--bm25` (or no encoders)
ranks by BM25 alone: each function's qualified name and whole text, docstring included, split as
`search_data.words` splits them.  The header on stderr says which ranking answered.

The index of the functions lives under the user's cache directory ($XDG_CACHE_HOME or ~/.cache,
then anycode/search/), one file per set of PATHS: for every source file its size, modification time
and functions (first and last line, qualified name, words).  A later search re-reads only files
that changed; files that are huge, binary, not UTF-8 or do not parse are skipped with a line on
stderr; an index that cannot be read is rebuilt.  The server (server/search.py) keeps a workspace's index with the same
functions (`index_file_for`, `refresh_file`, `ranker`), so both read and rank one way.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.model.search_data import Features, function_features, qualified_name, strip_docstring, words

INDEX_VERSION = 3
MAX_FILE_BYTES = 1_000_000
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", "build", "dist"}
BM25 = "bm25"
INSTALL_HINT = 'pip install "anycode[search]"'


def _stderr(message: str) -> None:
    print(f"anycode search: {message}", file=sys.stderr)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anycode" / "search"


def index_file_for(paths: list[Path], ranking: str = BM25, version: str = "", cache: Path | None = None) -> Path:
    """The index file of a set of paths and a ranking: the command and the server share it, so a
    folder searched from the command line and opened in an editor is read once."""
    key = "\n".join([ranking, version] + sorted(str(Path(p).resolve()) for p in paths))
    return (cache or cache_dir()) / f"index-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json.gz"


def ranking_of(encoders) -> tuple[str, str]:
    """(ranking, version) of `index_file_for`: the index of one set of encoders is not another's."""
    if encoders is None:
        return BM25, ""
    return f"encoders {encoders.model_dir.resolve()}", str((encoders.model_dir / "search_code.onnx").stat().st_mtime_ns)


def ranking_name(encoders) -> str:
    """What ranks, as the command's header and the server's stats say it: bm25, encoders, or
    encoders+bm25 (the encoders weigh BM25 in and bm25s is installed)."""
    if encoders is None:
        return BM25
    return "encoders+bm25" if encoders.bm25_weight and have_bm25() else "encoders"


def have_bm25() -> bool:
    """Whether BM25 ranking can run (the search extra is installed); indexing does not need it."""
    try:
        import bm25s  # noqa: F401
    except ImportError:
        return False
    return True


def is_source(path: Path) -> bool:
    return grammars.for_language_id(None, path.name) is not None


def source_files(paths: list[Path]) -> list[Path]:
    """The files under `paths` of a known language, sorted, skipping VCS, virtualenv and build folders."""
    out = []
    for p in paths:
        if p.is_file():
            out.append(p.resolve())
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            out.extend(Path(root, f).resolve() for f in sorted(files))
    return [f for f in dict.fromkeys(out) if is_source(f)]


def _readable(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes, or why it is not searched (unreadable, huge, binary, not UTF-8)."""
    try:
        source = path.read_bytes()
    except OSError as e:
        return b"", f"unreadable ({e.strerror})"
    if len(source) > MAX_FILE_BYTES:
        return b"", f"huge ({len(source)} bytes)"
    if b"\0" in source:
        return b"", "binary"
    try:
        source.decode("utf8")
    except UnicodeDecodeError:
        return b"", "not UTF-8"
    return source, None


def file_functions(path: Path, parsers: dict, encoders=None) -> tuple[list[list], str | None]:
    """[first line, last line, qualified name, words] of each function of a file (and its vector,
    `pack_vector`'s string, with `encoders`), or why the file is skipped."""
    lang = grammars.for_language_id(None, path.name)
    source, skipped = _readable(path)
    if skipped:
        return [], skipped
    parser = parsers.setdefault(lang.id, lang.new_parser())
    root = lang.parse(source, parser).root_node
    if root.has_error:
        return [], "does not parse"
    out, feats, stack = [], [], [root]
    while stack:
        n = stack.pop()
        stack.extend(reversed(n.named_children))
        if n.type in lang.FUNCTION_TYPES:
            name = qualified_name(lang, n)
            text = source[n.start_byte: n.end_byte].decode("utf8")
            out.append([n.start_point[0] + 1, n.end_point[0] + 1, name, " ".join(words(name) + words(text))])
            if encoders is not None:
                feats.append(encoder_features(lang, n))
    if encoders is not None and out:
        for row, vec in zip(out, encoders.functions(feats)):
            row.append(pack_vector(vec))
    return out, None


def pack_vector(vec: np.ndarray) -> str:
    """A function's vector as the index stores it: int8 with a float16 scale, base64 (a quarter of
    float32: 100,000 functions of width 384 in about 40 MB)."""
    scale = np.float16(max(float(np.abs(vec).max()), 1e-8) / 127.0)
    q = np.clip(np.rint(vec / np.float32(scale)), -127, 127).astype(np.int8)
    return base64.b64encode(scale.tobytes() + q.tobytes()).decode()


def unpack_vectors(packed: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The int8 rows [N, W] and float32 scales [N] of `pack_vector`'s strings."""
    raw = np.frombuffer(b"".join(base64.b64decode(p) for p in packed), np.uint8).reshape(len(packed), -1)
    return raw[:, 2:].view(np.int8), raw[:, :2].copy().view(np.float16)[:, 0].astype(np.float32)


def vector_scores(rows: np.ndarray, scales: np.ndarray, q: np.ndarray, block: int = 1024) -> np.ndarray:
    """Inner products of the int8 `rows` (times their scales) with the query vector `q`, a block of rows
    at a time: no float copy of the whole matrix, and a block small enough to stay in cache."""
    out = np.empty(len(rows), np.float32)
    q = q.astype(np.float32)
    for i in range(0, len(rows), block):
        out[i: i + block] = (rows[i: i + block].astype(np.float32) @ q) * scales[i: i + block]
    return out


def top(scores: np.ndarray, keep: np.ndarray, n: int, tie) -> list[int]:
    """Indices of the n best scores where `keep`, best first; equal scores ordered by `tie(i)`."""
    cand = np.flatnonzero(keep)
    if len(cand) > n:
        cand = cand[np.argpartition(-scores[cand], n - 1)[:n]]
    return sorted(cand.tolist(), key=lambda i: (-scores[i], tie(i)))


def encoder_features(lang, fn) -> Features:
    """A function's features as training made them: without its docstring."""
    doc = lang.docstring(fn)
    node = lang.convert(fn)
    return function_features(strip_docstring(node, doc) if doc is not None else node, lang)


def empty_index() -> dict:
    return {"version": INDEX_VERSION, "files": {}}


def load_index(path: Path, log=_stderr) -> dict:
    """The index on disk, or an empty one when it is missing, corrupt or of another version."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as fh:
            index = json.load(fh)
        if isinstance(index, dict) and index.get("version") == INDEX_VERSION and isinstance(index.get("files"), dict):
            return index
        log(f"index {path} is of another version: rebuilt")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, EOFError) as e:
        log(f"index {path} cannot be read ({e}): rebuilt")
    return empty_index()


def save_index(index: dict, index_file: Path) -> None:
    """Written whole to a file of this process and thread, then renamed over the index: a reader (or
    another writer: the command and a server) never sees half a file."""
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_name(f"{index_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf8") as fh:
        json.dump(index, fh)
    tmp.replace(index_file)


def refresh_file(index: dict, path: Path, parsers: dict, encoders=None, log=_stderr) -> bool:
    """The file's entry re-read if its size or modification time changed (dropped if it is gone or
    of no known language).  True when the index changed: the file re-read or dropped."""
    key = str(path)
    try:
        st = path.stat()
        searched = is_source(path) and path.is_file()
    except OSError:
        searched = False
    if not searched:
        return index["files"].pop(key, None) is not None
    entry = index["files"].get(key)
    if entry is not None and entry["size"] == st.st_size and entry["mtime"] == st.st_mtime_ns:
        return False
    functions, skipped = file_functions(path, parsers, encoders)
    if skipped:
        log(f"skipped {path}: {skipped}")
    index["files"][key] = {"size": st.st_size, "mtime": st.st_mtime_ns, "functions": functions}
    return True


def update_index(paths: list[Path], index_file: Path, encoders=None, log=_stderr) -> tuple[dict, int]:
    """The index of `paths`, files that changed re-read; saved back.  Returns it and the files re-read."""
    index = load_index(index_file, log)
    files = source_files(paths)
    parsers: dict = {}
    reread = sum(refresh_file(index, f, parsers, encoders, log) for f in files)
    keep = {str(f) for f in files}
    index["files"] = {k: v for k, v in index["files"].items() if k in keep}
    save_index(index, index_file)
    return index, reread


def ranker(index: dict, encoders=None):
    """`rank(query, n)` over the index's functions as they are now: (path, first line, last line,
    qualified name, score) of the n best, best first.  With encoders the score is the inner product
    of the vectors, plus BM25 where the encoders give it a weight and bm25s is installed (both
    standardized: `z(vectors) + w * z(bm25)`, as model/search_hybrid.py measured it); without, BM25
    alone.  BM25's index is built once here, so a caller that keeps the ranker (the server, between
    changes) answers each query without rebuilding it.  Raises ImportError without bm25s (and no
    encoders)."""
    rows = [(path, *f) for path, e in list(index["files"].items()) for f in e["functions"]]
    if encoders is None:
        lexical = bm25_scores(rows)

        def scores_of(query: str, q: list[str]):
            s = lexical(q)
            return s, s > 0
        return _rank(rows, scores_of)
    vecs, scales = unpack_vectors([r[5] for r in rows]) if rows else (None, None)
    lexical = bm25_scores(rows) if encoders.bm25_weight and have_bm25() else None

    def scores_of(query: str, q: list[str]):
        s = vector_scores(vecs, scales, encoders.queries([query])[0])
        if lexical is not None:
            s = zscore(s) + encoders.bm25_weight * zscore(lexical(q))
        return s, np.ones(len(rows), bool)
    return _rank(rows, scores_of)


def zscore(s: np.ndarray) -> np.ndarray:
    """Scores standardized over the functions (mean 0, deviation 1), so that two rankings' scales add."""
    return (s - s.mean(-1, keepdims=True)) / (s.std(-1, keepdims=True) + 1e-6)


def bm25_scores(rows: list):
    """`scores(query words)` [N] of BM25 over the rows' words, its index built once."""
    import bm25s

    retriever = bm25s.BM25()
    if rows:
        retriever.index([r[4].split() or [""] for r in rows], show_progress=False)
    return lambda q: np.asarray(retriever.get_scores(q), np.float32)


def _rank(rows: list, scores_of):
    """`rank(query, n)` over rows by `scores_of(query, words) -> (scores, which may answer)`."""

    def rank(query: str, n: int) -> list[tuple[str, int, int, str, float]]:
        q = words(query)
        if not q or not rows or n <= 0:
            return []
        scores, keep = scores_of(query, q)
        best = top(scores, keep, n, lambda i: (rows[i][0], rows[i][1]))
        return [(rows[i][0], rows[i][1], rows[i][2], rows[i][3], float(scores[i])) for i in best]

    return rank


def search(index: dict, query: str, n: int, encoders=None) -> list[tuple[str, int, int, str, float]]:
    """(path, first line, last line, qualified name, score) of the n best functions, best first."""
    return ranker(index, encoders)(query, n)


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.description = __doc__.split("\n\n")[0]
    ap.add_argument("query")
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("-n", type=int, default=10, help="how many functions (default 10)")
    ap.add_argument("--cache", type=Path, help="index folder (default: the user cache dir's anycode/search)")
    ap.add_argument("--model", type=Path, help="exported encoders (model/search_export.py; default: the shipped ones)")
    ap.add_argument("--bm25", action="store_true", help="rank by BM25 alone, not by the encoders")


def encoders_for(args):
    """The encoders a search ranks by: --model's, else the shipped ones; None for BM25 (--bm25, or
    none ship)."""
    from anycode.model import search_runtime

    if args.bm25:
        return None
    if args.model:
        return search_runtime.SearchEncoders(args.model)
    return search_runtime.shipped()


def run(args) -> int:
    encoders = encoders_for(args)
    if encoders is None and not have_bm25():
        print(f"anycode search needs bm25s: {INSTALL_HINT}", file=sys.stderr)
        return 2
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"anycode search: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    ranking, version = ranking_of(encoders)
    index, reread = update_index(args.paths, index_file_for(args.paths, ranking, version, args.cache), encoders)
    total = sum(len(e["functions"]) for e in index["files"].values())
    where = f" {encoders.model_dir}" if encoders is not None else ""
    print(f"# {ranking_name(encoders)}{where} over {total} functions of {len(index['files'])} files ({reread} re-read)", file=sys.stderr)
    cwd = Path.cwd()
    for path, line, _end, name, score in search(index, args.query, args.n, encoders):
        p = Path(path)
        shown = p.relative_to(cwd) if p.is_relative_to(cwd) else p
        print(f"{shown}:{line}: {name} {score:.2f}")
    return 0
