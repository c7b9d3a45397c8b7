"""`anycode search "QUERY" PATHS... [-n N]`: the functions of files and folders that best match a query.

Ranking is BM25 (bm25s) over each function's words (its qualified name and its whole text, docstring
included, split as `search_data.words` splits them): the lexical baseline of docs/search.md, since no
trained encoders ship yet; the command says "bm25" in its header.  With `--model DIR` (encoders that
model/search_export.py wrote) it ranks by the inner product of the query's and each function's
vectors instead, the function featurized without its docstring as in training.

The index of the functions lives under the user's cache directory ($XDG_CACHE_HOME or ~/.cache,
then anycode/search/), one file per set of PATHS: for every source file its size, modification time
and functions (line, qualified name, words).  A later search re-reads only files that changed; files
that are huge, binary, not UTF-8 or do not parse are skipped with a line on stderr; an index that
cannot be read is rebuilt.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.model.search_data import Features, function_features, qualified_name, strip_docstring, words

INDEX_VERSION = 1
MAX_FILE_BYTES = 1_000_000
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", "build", "dist"}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "anycode" / "search"


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
    return [f for f in dict.fromkeys(out) if grammars.for_language_id(None, f.name) is not None]


def file_functions(path: Path, parsers: dict, encoders=None) -> tuple[list[list], str | None]:
    """[line, qualified name, words] of each function of a file (and its vector, base64 of float16,
    with `encoders`), or why the file is skipped."""
    lang = grammars.for_language_id(None, path.name)
    try:
        source = path.read_bytes()
    except OSError as e:
        return [], f"unreadable ({e.strerror})"
    if len(source) > MAX_FILE_BYTES:
        return [], f"huge ({len(source)} bytes)"
    if b"\0" in source:
        return [], "binary"
    try:
        source.decode("utf8")
    except UnicodeDecodeError:
        return [], "not UTF-8"
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
            out.append([n.start_point[0] + 1, name, " ".join(words(name) + words(text))])
            if encoders is not None:
                feats.append(encoder_features(lang, n))
    if encoders is not None and out:
        for row, vec in zip(out, encoders.functions(feats).astype(np.float16)):
            row.append(base64.b64encode(vec.tobytes()).decode())
    return out, None


def encoder_features(lang, fn) -> Features:
    """A function's features as training made them: without its docstring."""
    doc = lang.docstring(fn)
    node = lang.convert(fn)
    return function_features(strip_docstring(node, doc) if doc is not None else node, lang)


def load_index(path: Path) -> dict:
    """The index on disk, or an empty one when it is missing, corrupt or of another version."""
    try:
        with gzip.open(path, "rt", encoding="utf8") as fh:
            index = json.load(fh)
        if index.get("version") == INDEX_VERSION and isinstance(index.get("files"), dict):
            return index
        print(f"anycode search: index {path} is of another version: rebuilt", file=sys.stderr)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, EOFError) as e:
        print(f"anycode search: index {path} cannot be read ({e}): rebuilt", file=sys.stderr)
    return {"version": INDEX_VERSION, "files": {}}


def update_index(paths: list[Path], index_file: Path, encoders=None) -> tuple[dict, int]:
    """The index of `paths`, files that changed re-read; saved back.  Returns it and the files re-read."""
    index = load_index(index_file)
    old, files, parsers, reread = index["files"], {}, {}, 0
    for f in source_files(paths):
        try:
            st = f.stat()
        except OSError:
            continue
        key = str(f)
        entry = old.get(key)
        if entry is None or entry["size"] != st.st_size or entry["mtime"] != st.st_mtime_ns:
            functions, skipped = file_functions(f, parsers, encoders)
            if skipped:
                print(f"anycode search: skipped {f}: {skipped}", file=sys.stderr)
            entry = {"size": st.st_size, "mtime": st.st_mtime_ns, "functions": functions}
            reread += 1
        files[key] = entry
    index["files"] = files
    index_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_file.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf8") as fh:
        json.dump(index, fh)
    tmp.replace(index_file)
    return index, reread


def search(index: dict, query: str, n: int, encoders=None) -> list[tuple[str, int, str, float]]:
    """(path, line, qualified name, score) of the n best functions for the query, best first."""
    q = words(query)
    rows = [(path, *f) for path, e in index["files"].items() for f in e["functions"]]
    if not q or not rows:
        return []
    if encoders is not None:
        vecs = np.stack([np.frombuffer(base64.b64decode(r[4]), np.float16) for r in rows]).astype(np.float32)
        scores = vecs @ encoders.queries([query])[0]
        keep = np.ones(len(rows), bool)
    else:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index([r[3].split() or [""] for r in rows], show_progress=False)
        scores = retriever.get_scores(q)
        keep = scores > 0
    best = sorted(np.flatnonzero(keep), key=lambda i: (-scores[i], rows[i][0], rows[i][1]))[:n]
    return [(rows[i][0], rows[i][1], rows[i][2], float(scores[i])) for i in best]


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.description = __doc__.split("\n\n")[0]
    ap.add_argument("query")
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("-n", type=int, default=10, help="how many functions (default 10)")
    ap.add_argument("--cache", type=Path, help="index folder (default: the user cache dir's anycode/search)")
    ap.add_argument("--model", type=Path, help="exported encoders (model/search_export.py) instead of BM25")


def run(args) -> int:
    encoders = None
    if args.model:
        from anycode.model.search_runtime import SearchEncoders
        encoders = SearchEncoders(args.model)
    else:
        try:
            import bm25s  # noqa: F401
        except ImportError:
            print("anycode search needs bm25s: pip install 'anycode[search]'", file=sys.stderr)
            return 2
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"anycode search: no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    ranking = "bm25" if encoders is None else f"encoders {args.model.resolve()}"
    version = "" if encoders is None else str((args.model / "search_code.onnx").stat().st_mtime_ns)
    key = "\n".join([ranking, version] + sorted(str(p.resolve()) for p in args.paths))
    name = f"index-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json.gz"
    index, reread = update_index(args.paths, (args.cache or cache_dir()) / name, encoders)
    total = sum(len(e["functions"]) for e in index["files"].values())
    print(f"# {ranking} over {total} functions of {len(index['files'])} files ({reread} re-read)", file=sys.stderr)
    cwd = Path.cwd()
    for path, line, name, score in search(index, args.query, args.n, encoders):
        p = Path(path)
        shown = p.relative_to(cwd) if p.is_relative_to(cwd) else p
        print(f"{shown}:{line}: {name} {score:.2f}")
    return 0
