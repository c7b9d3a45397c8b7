"""`anycode search-data pack`: the code-search pairs as the fixed arrays the encoders read.

Vocabularies come from the train split's counts (`search_data` wrote the features with each split's
own strings): subtokens (code, query words and path ends share one table), node types, whole paths
(each stored once as its node types and directions, so a context is three small ids) and path ends
(each stored once as its subtokens).  Ids 0 and 1 are padding and unknown in every table.

Written to OUT (a folder that can travel to a machine without tree-sitter), each array file an
uncompressed .npz inside xz (`save_arrays`: xz finds more to share in raw ids than deflate does):

- `vocab.json.xz`: the tables as strings; `meta.json`: their sizes and the limits the arrays were cut at;
- `tables.npz.xz`: `path_types` [P, L] and `path_dirs` [P, L] (1 up, 2 top, 3 down, 0 padding),
  `end_subs` [E, S];
- `{split}.npz.xz` for train, dev, test and the CoSQA sets: `query` [N, Q], `code` [N, C],
  `ctx` [N, K, 3] (start end, path, end end), padded with 0; CoSQA sets also `label` [N] (-1 where
  unknown) and `code_id` [N] (the same id for the same function text).
"""
from __future__ import annotations

import argparse
import io
import json
import lzma
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

PAD, UNK = 0, 1
MAX_QUERY = 32
MAX_CODE = 200
MAX_CONTEXTS = 32
MAX_PATH_NODES = 9
MAX_END_SUBTOKENS = 3
COSQA_SETS = {"cosqa_dev": "cosqa-dev.json", "cosqa_test": "test_webquery.json"}
_FLATTENED_INDENT = re.compile(r" ((?:    )+)(?=\S)")


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    Path(path).write_bytes(lzma.compress(buf.getvalue(), preset=6))


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as z:
        return {k: z[k] for k in z.files}


def load_vocab(folder: Path) -> dict:
    return json.loads(lzma.decompress((Path(folder) / "vocab.json.xz").read_bytes()))


def table(counts: Counter, size: int, min_count: int) -> list[str]:
    """The `size` most frequent strings seen at least `min_count` times, after <pad> and <unk>."""
    return ["<pad>", "<unk>"] + [s for s, n in counts.most_common(size - 2) if n >= min_count]


def train_tables(feats, sizes: dict) -> dict:
    """Subtoken, node type, path and path-end tables from the train split's features."""
    subs, types, paths, ends = Counter(), Counter(), Counter(), Counter()
    for i in range(len(feats)):
        subs.update(feats.tokens("query", i))
        subs.update(feats.tokens("code", i))
        for a, p, b in feats.contexts(i):
            paths[p] += 1
            ends[a] += 1
            ends[b] += 1
    for p, n in paths.items():
        for t in p.split(" "):
            types[t.lstrip("^")] += n
    for e, n in ends.items():
        for s in e.split(" "):
            subs[s] += n
    return {"subtokens": table(subs, sizes["subtokens"], 3), "node_types": table(types, 10_000, 1),
            "paths": table(paths, sizes["paths"], 2), "ends": table(ends, sizes["ends"], 2)}


def table_arrays(vocab: dict) -> dict[str, np.ndarray]:
    """Paths as node type ids and directions, path ends as subtoken ids."""
    type_id = {t: i for i, t in enumerate(vocab["node_types"])}
    sub_id = {s: i for i, s in enumerate(vocab["subtokens"])}
    n = len(vocab["paths"])
    path_types = np.zeros((n, MAX_PATH_NODES), np.int32)
    path_dirs = np.zeros((n, MAX_PATH_NODES), np.int8)
    for i, p in enumerate(vocab["paths"][2:], start=2):
        nodes = p.split(" ")[:MAX_PATH_NODES]
        top = next(k for k, t in enumerate(nodes) if t.startswith("^"))
        for k, t in enumerate(nodes):
            path_types[i, k] = type_id.get(t.lstrip("^"), UNK)
            path_dirs[i, k] = 1 if k < top else 2 if k == top else 3
    end_subs = np.zeros((len(vocab["ends"]), MAX_END_SUBTOKENS), np.int32)
    for i, e in enumerate(vocab["ends"][2:], start=2):
        for k, s in enumerate(e.split(" ")[:MAX_END_SUBTOKENS]):
            end_subs[i, k] = sub_id.get(s, UNK)
    return {"path_types": path_types, "path_dirs": path_dirs, "end_subs": end_subs}


class Encoder:
    """Strings to the packed ids of one vocabulary."""

    def __init__(self, vocab: dict):
        self.sub = {s: i for i, s in enumerate(vocab["subtokens"])}
        self.path = {s: i for i, s in enumerate(vocab["paths"])}
        self.end = {s: i for i, s in enumerate(vocab["ends"])}

    def row(self, query: list[str], code: list[str], contexts: list[tuple[str, str, str]]):
        q = [self.sub.get(w, UNK) for w in query[:MAX_QUERY]]
        c = [self.sub.get(w, UNK) for w in code[:MAX_CODE]]
        x = [(self.end.get(a, UNK), self.path.get(p, UNK), self.end.get(b, UNK)) for a, p, b in contexts[:MAX_CONTEXTS]]
        return q, c, x


def dtype_for(n: int):
    return np.uint16 if n <= 65535 else np.int32


def to_arrays(rows: list, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Padded arrays of encoded rows (lists of ids as `Encoder.row` gives them); `sizes`, the
    vocabularies' lengths, choose the narrowest integer type."""
    n = len(rows)
    sub_t, ctx_t = dtype_for(sizes["subtokens"]), dtype_for(max(sizes["paths"], sizes["ends"]))
    query = np.zeros((n, MAX_QUERY), sub_t)
    code = np.zeros((n, MAX_CODE), sub_t)
    ctx = np.zeros((n, MAX_CONTEXTS, 3), ctx_t)
    for i, (q, c, x) in enumerate(rows):
        query[i, : len(q)] = q
        code[i, : len(c)] = c
        if x:
            ctx[i, : len(x)] = x
    return {"query": query, "code": code, "ctx": ctx}


def restore_newlines(code: str) -> str:
    """CoSQA's WebQueryTest functions come with newlines turned into spaces: a space followed by a
    multiple of four spaces before a token was a newline and an indentation."""
    return _FLATTENED_INDENT.sub(lambda m: "\n" + m.group(1), code)


def cosqa_rows(path: Path, enc: Encoder, lang) -> tuple[list, dict[str, np.ndarray], Counter]:
    """Encoded rows, labels and function ids of a CoSQA file (functions of language `lang`); functions
    that do not parse (even with their newlines restored) keep their words and no path-contexts."""
    from anycode.model import search_data as sd

    parser = lang.new_parser()
    records = json.loads(Path(path).read_text())
    answers = {}
    answers_file = Path(path).parent / "webquery_answers.txt"
    if "label" not in records[0] and answers_file.exists():
        answers = dict(line.split("\t") for line in answers_file.read_text().split("\n") if "\t" in line)
    rows, labels, code_ids, seen, counts = [], [], [], {}, Counter()
    for r in records:
        feats = sd.source_features(r["code"], lang, parser) or sd.source_features(restore_newlines(r["code"]), lang, parser)
        counts["parsed" if feats else "words only"] += 1
        if feats is None:
            feats = sd.Features(sd.words(r["code"])[: sd.MAX_CODE_SUBTOKENS], [])
        rows.append(enc.row(sd.words(r["doc"]), feats.code, feats.contexts))
        label = r.get("label", answers.get(r["idx"]))
        labels.append(-1 if label is None else int(label))
        code_ids.append(seen.setdefault(r["code"], len(seen)))
    return rows, {"label": np.array(labels, np.int8), "code_id": np.array(code_ids, np.int32)}, counts


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, required=True, help="what `search-data build` wrote (data/search/LANG)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cosqa", type=Path, default=Path("../shared/data/cosqa"))
    ap.add_argument("--subtokens", type=int, default=20_000)
    ap.add_argument("--paths", type=int, default=60_000)
    ap.add_argument("--ends", type=int, default=60_000)


def run(args) -> int:
    from anycode import grammars
    from anycode.model.search_data import SplitFeatures

    args.out.mkdir(parents=True, exist_ok=True)
    built = json.loads((args.data / "summary.json").read_text())
    lang = grammars.get(built.get("language", grammars.DEFAULT))
    train = SplitFeatures(args.data / "train.feat.npz")
    vocab = train_tables(train, {"subtokens": args.subtokens, "paths": args.paths, "ends": args.ends})
    meta = {"language": lang.id, "sizes": {k: len(v) for k, v in vocab.items()},
            "limits": {"query": MAX_QUERY, "code": MAX_CODE, "contexts": MAX_CONTEXTS,
                       "path_nodes": MAX_PATH_NODES, "end_subtokens": MAX_END_SUBTOKENS}}
    (args.out / "meta.json").write_text(json.dumps(meta))
    (args.out / "vocab.json.xz").write_bytes(lzma.compress(json.dumps(vocab, ensure_ascii=False).encode()))
    save_arrays(args.out / "tables.npz.xz", table_arrays(vocab))
    enc = Encoder(vocab)
    summary = {}
    for split in ("train", "dev", "test"):
        feats = train if split == "train" else SplitFeatures(args.data / f"{split}.feat.npz")
        rows = [enc.row(feats.tokens("query", i), feats.tokens("code", i), feats.contexts(i)) for i in range(len(feats))]
        save_arrays(args.out / f"{split}.npz.xz", to_arrays(rows, meta["sizes"]))
        summary[split] = len(rows)
    for name, file in COSQA_SETS.items():
        if (args.cosqa / file).exists():
            rows, extra, counts = cosqa_rows(args.cosqa / file, enc, lang)
            save_arrays(args.out / f"{name}.npz.xz", {**to_arrays(rows, meta["sizes"]), **extra})
            summary[name] = {"pairs": len(rows), **counts}
    summary["sizes"] = meta["sizes"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(json.dumps(summary), f"{total / 2**20:.1f} MiB in {args.out}", file=sys.stderr)
    return 0
