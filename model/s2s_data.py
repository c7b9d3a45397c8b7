"""The seq2seq baseline's examples: the SLM dataset's holes as token sequences (issue 21).

    anycode s2s pack [--data data/dataset/LANG] [--corpus data/corpus/LANG] [--out data/s2s/LANG]
                     [--splits train,dev] [--vocab 6000] [--pieces DIR] [--jobs 2] [--shards 0::4]

The holes are the SLM's own (the dataset's shards: the same functions and hole nodes of every
split).  Shards keep trees, not text, and the printer prints expressions, not functions, so each
function is found again in its corpus file (model/fim_eval.py's `function_at`, the check that it
flattens to the shard's tree included) and read as code: its text with the comments blanked,
cut into the language's tokens (`Language.tokens`), a name into its subtokens (`Language.subtokens`,
the SLM's subtokens) with JOIN between the subtokens of one name, other tokens (strings, numbers,
operators) whole.  The source of an example is the function's pieces with the hole's replaced by
HOLE; the target is the hole's pieces, then EOS (the paper's NMT baselines: subtokenized code, the
target replaced by PRED, the target predicted as subtokens).  A hole whose bytes do not start and
end at token boundaries is dropped (counted in the summary).

The vocabulary: the specials, OOV_SLOTS slots, then the most frequent train pieces.  A piece outside
it is stored as the function's own OOV number (vocab + its rank among the function's distinct OOV
pieces); an example turns the OOV pieces of its source into the slots <oov0>, <oov1>, ... in order
of first occurrence, so that the encoder tells them apart and the decoder can copy them
(model/s2s.py's pointer), and a target piece outside the vocabulary and the source becomes UNK.

`pack` writes SPLIT.s2s.npz (uint16 piece ids of every function, the functions' offsets, the
examples' function and hole piece range) and vocab.json, and with `--pieces` the splits as xz
pieces under 16 MiB (model/fim_data.py's `write_pieces`), what device calls carry.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.grammars import Language
from anycode.model.dataset import Shard, shard_paths
from anycode.model.fim_data import write_pieces
from anycode.model.token_search import blank, function_at
from anycode.model.workers import process_pool

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<hole>", "<j>"]
PAD, UNK, BOS, EOS, HOLE, JOIN = range(len(SPECIALS))
OOV_SLOTS = 64
FIRST_SLOT = len(SPECIALS)
FIRST_WORD = FIRST_SLOT + OOV_SLOTS


# ---------------------------------------------------------------- code as pieces


def code_pieces(lang: Language, code: str) -> tuple[list[str], list[int], list[tuple[int, int]]]:
    """The pieces of `code` (a name's subtokens joined by JOIN, other tokens whole), the piece each
    token starts at, and each token's character span."""
    pieces, first, spans = [], [], []
    for tok in lang.tokens(code):
        first.append(len(pieces))
        spans.append((tok.start, tok.end))
        parts = lang.subtokens(lang.IDENTIFIER, tok.text) if tok.kind == "name" else [tok.text]
        for j, part in enumerate(parts):
            if j:
                pieces.append(SPECIALS[JOIN])
            pieces.append(part)
    return pieces, first, spans


def hole_pieces(first: list[int], spans: list[tuple[int, int]], n: int, start: int, end: int) -> tuple[int, int] | None:
    """The pieces [a, b) of the tokens covering the characters [start, end) exactly, else None."""
    starts = [s for s, _ in spans]
    ta = next((i for i, s in enumerate(starts) if s == start), None)
    tb = next((i for i in range(len(spans) - 1, -1, -1) if spans[i][1] == end), None)
    if ta is None or tb is None or tb < ta:
        return None
    return first[ta], first[tb + 1] if tb + 1 < len(first) else n


def pieces_text(lang: Language, pieces: list[str]) -> str:
    """The code of a piece sequence: a name's subtokens joined as the language joins them, tokens
    separated by a space (the printer lays them out again before judging)."""
    words: list[list[str]] = []
    glue = False
    for p in pieces:
        if p == SPECIALS[JOIN]:
            glue = True
            continue
        if glue and words:
            words[-1].append(p)
        else:
            words.append([p])
        glue = False
    return " ".join(lang.join_value(lang.IDENTIFIER, w) if len(w) > 1 else w[0] for w in words)


def encode_function(pieces: list[str], words: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    """A function's pieces as ids: a vocabulary id, or len(vocab) + the piece's rank among the
    function's distinct OOV pieces; and those OOV pieces in that order."""
    base = FIRST_WORD + len(words)
    oov: dict[str, int] = {}
    ids = [words[p] if p in words else base + oov.setdefault(p, len(oov)) for p in pieces]
    return np.array(ids, dtype=np.int64), list(oov)


def make_example(ids: np.ndarray, a: int, b: int, vocab: int, max_src: int, max_tgt: int):
    """(source, target, slots) of the hole [a, b) of a function's ids (`encode_function`): the source
    is the function with HOLE for the hole (a window of max_src around it), the target the hole's
    pieces (at most max_tgt), the function's OOV numbers turned into slots (slots[j]: the OOV number
    of <oov j>) or UNK."""
    src = np.concatenate([ids[:a], [HOLE], ids[b:]])
    if len(src) > max_src:
        lo = min(max(a - max_src // 2, 0), len(src) - max_src)
        src = src[lo: lo + max_src]
    tgt = ids[a:b][:max_tgt].copy()
    slots: list[int] = []
    where: dict[int, int] = {}
    for x in src[src >= vocab].tolist():
        if x not in where and len(slots) < OOV_SLOTS:
            where[x] = FIRST_SLOT + len(slots)
            slots.append(x - vocab)
    src = np.array([where.get(x, UNK) if x >= vocab else x for x in src.tolist()], dtype=np.int64)
    tgt = np.array([where.get(x, UNK) if x >= vocab else x for x in tgt.tolist()], dtype=np.int64)
    return src, tgt, slots


# ---------------------------------------------------------------- packing


def shard_functions(shard_path: str, corpus: str, split: str) -> tuple[list, list, Counter]:
    """Every function of a shard found in its file, as pieces, and its examples (function, a, b)."""
    shard = Shard(Path(shard_path))
    lang, parser = shard.lang, shard.lang.new_parser()
    by_file: dict[str, list[int]] = {}
    for f in range(shard.num_functions):
        by_file.setdefault(shard.source_of(f)[0], []).append(f)
    holes: dict[int, list[int]] = {}
    for f, h in zip(shard.arrays["e_func"].tolist(), shard.arrays["e_hole"].tolist()):
        holes.setdefault(f, []).append(h)
    functions, examples, stats = [], [], Counter()
    for name, fs in by_file.items():
        try:
            source = (Path(corpus) / split / name).read_bytes()
        except OSError:
            stats["file missing"] += sum(len(holes.get(f, [])) for f in fs)
            continue
        root = lang.parse(source, parser).root_node
        for f in fs:
            found = function_at(lang, root, shard.source_of(f)[1], shard.tree(f))
            if found is None:
                stats["function not found"] += len(holes.get(f, []))
                continue
            node, flat = found
            functions.append(function_examples(lang, source, root, node, flat, holes.get(f, []), examples,
                                               len(functions), stats))
    return functions, examples, stats


def function_examples(lang: Language, source: bytes, root, node, flat, holes: list[int], examples: list, k: int,
                      stats: Counter) -> list[str]:
    """The pieces of a function found in its file; its holes' piece ranges appended to `examples` as
    (k, a, b)."""
    fs = node.start_byte
    code = blank(source[fs: node.end_byte], lang.comments(root, fs, node.end_byte), fs)
    text = code.decode("utf8", "replace")
    ascii_ = len(text) == len(code)
    char = (lambda i: i) if ascii_ else (lambda i: len(code[:i].decode("utf8", "replace")))
    pieces, first, spans = code_pieces(lang, text)
    for h in holes:
        ab = hole_pieces(first, spans, len(pieces), char(flat.start_byte[h] - fs), char(flat.end_byte[h] - fs))
        if ab is None:
            stats["hole not at token boundaries"] += 1
            continue
        examples.append((k, *ab))
        stats["examples"] += 1
    return pieces


def collect(data: Path, corpus: Path, split: str, jobs: int, shards: slice = slice(None)) -> tuple[list, list, Counter]:
    """The functions (as pieces) and examples of a split's `shards` (default all), in shard order."""
    functions, examples, stats = [], [], Counter()
    paths = [str(p) for p in shard_paths(data, split)[shards]]
    with process_pool(jobs) as pool:
        for i, (fns, exs, st) in enumerate(pool.map(shard_functions, paths, [str(corpus)] * len(paths),
                                                    [split] * len(paths))):
            examples += [(k + len(functions), a, b) for k, a, b in exs]
            functions += fns
            stats.update(st)
            print(f"{split}: shard {i + 1}/{len(paths)}, {stats['examples']} examples", file=sys.stderr, flush=True)
    return functions, examples, stats


def build_vocab(functions: list[list[str]], size: int) -> list[str]:
    """The specials, the OOV slots, then the most frequent pieces (JOIN is a special), `size` in all."""
    counts = Counter(p for fn in functions for p in fn if p != SPECIALS[JOIN])
    slots = [f"<oov{j}>" for j in range(OOV_SLOTS)]
    return SPECIALS + slots + [p for p, _ in counts.most_common(size - FIRST_WORD)]


def save_split(out: Path, split: str, functions: list, examples: list, vocab: list[str]) -> Path:
    """SPLIT.s2s.npz: every function's ids (`encode_function`) end to end, the functions' offsets and
    the examples."""
    words = {p: i for i, p in enumerate(vocab) if i >= FIRST_WORD}
    ids = [encode_function(fn, words)[0] for fn in functions]
    if any(len(x) and x.max() >= 1 << 16 for x in ids):
        raise SystemExit("error: a function has more OOV pieces than uint16 ids hold")
    ex = np.array(examples, dtype=np.int64).reshape(-1, 3)
    path = out / f"{split}.s2s.npz"
    np.savez(path, ids=np.concatenate(ids or [np.zeros(0, np.int64)]).astype(np.uint16),
             f_start=np.cumsum([0] + [len(x) for x in ids]), e_func=ex[:, 0].astype(np.int32),
             e_a=ex[:, 1].astype(np.int32), e_b=ex[:, 2].astype(np.int32))
    return path


def pack(data: Path, corpus: Path, out: Path, splits: list[str], size: int, jobs: int, pieces: Path | None,
         train_shards: slice = slice(None)) -> dict:
    """Every split packed (the vocabulary from train's pieces, or read from out/vocab.json when train
    is not among `splits`; of train, `train_shards` only, e.g. the slice an SLM run trains on);
    returns the summary (also out/summary.json)."""
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    vocab = json.loads((out / "vocab.json").read_text()) if (out / "vocab.json").exists() else None
    for split in sorted(splits, key=lambda s: s != "train"):
        functions, examples, stats = collect(data, corpus, split, jobs, train_shards if split == "train" else slice(None))
        if split == "train":
            vocab = build_vocab(functions, size)
            (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        if vocab is None:
            raise SystemExit(f"error: no {out / 'vocab.json'}: pack the train split first")
        save_split(out, split, functions, examples, vocab)
        lengths = [len(f) for f in functions]
        summary[split] = {**stats, "functions": len(functions), "pieces": int(sum(lengths)),
                          "pieces_p50": int(np.median(lengths)) if lengths else 0,
                          "pieces_p95": int(np.percentile(lengths, 95)) if lengths else 0}
        if pieces:
            parts = write_pieces(out, split, pieces, files=[f"{split}.s2s.npz"])
            summary[split]["xz_mib"] = round(sum(p.stat().st_size for p in parts) / 2**20, 1)
        print(f"{split}: {summary[split]}", file=sys.stderr, flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# ---------------------------------------------------------------- training examples


class S2SExamples:
    """The examples of one packed split in a fixed random order: example k of a run is the
    (k mod n)-th of the order drawn for epoch k // n from (seed, epoch), so the step is the data
    position.  With `batch`, the order is bucketed: each run of BUCKET_BATCHES batches of the drawn
    permutation is sorted by function length, cut into batches, and the batches shuffled, so that
    batch s (examples s * batch ... (s + 1) * batch - 1) pads little.  Item k is (source, target)
    as `make_example` builds them."""

    BUCKET_BATCHES = 64

    def __init__(self, folder: Path, split: str, vocab: int, max_src: int, max_tgt: int, seed: int = 0,
                 batch: int = 1):
        with np.load(Path(folder) / f"{split}.s2s.npz") as z:
            self.a = {k: z[k] for k in z.files}
        self.vocab, self.max_src, self.max_tgt, self.seed, self.batch = vocab, max_src, max_tgt, seed, batch
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.a["e_func"])

    def order(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self))
            if self.batch > 1:
                size = np.diff(self.a["f_start"])[self.a["e_func"]]
                chunk = self.batch * self.BUCKET_BATCHES
                for i in range(0, len(perm), chunk):
                    part = perm[i: i + chunk]
                    part = part[np.argsort(size[part], kind="stable")]
                    cut = [part[j: j + self.batch] for j in range(0, len(part), self.batch)]
                    perm[i: i + chunk] = np.concatenate([cut[j] for j in rng.permutation(len(cut))])
            self._order = (epoch, perm)
        return self._order[1]

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.order(k // len(self))[k % len(self)])
        f = int(self.a["e_func"][i])
        ids = self.a["ids"][self.a["f_start"][f]: self.a["f_start"][f + 1]].astype(np.int64)
        src, tgt, _ = make_example(ids, int(self.a["e_a"][i]), int(self.a["e_b"][i]), self.vocab, self.max_src,
                                   self.max_tgt)
        return src, tgt


def collate(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sources [B, S], decoder inputs [B, T] (BOS, then the target) and labels [B, T] (the target,
    then EOS), padded with PAD."""
    S = max(len(s) for s, _ in rows)
    T = max(len(t) for _, t in rows) + 1
    src = np.full((len(rows), S), PAD, dtype=np.int64)
    tin, tout = np.full((len(rows), T), PAD, dtype=np.int64), np.full((len(rows), T), PAD, dtype=np.int64)
    for r, (s, t) in enumerate(rows):
        src[r, : len(s)] = s
        tin[r, : len(t) + 1] = np.concatenate([[BOS], t])
        tout[r, : len(t) + 1] = np.concatenate([t, [EOS]])
    return src, tin, tout


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=Path("data/dataset") / grammars.DEFAULT)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus") / grammars.DEFAULT)
    ap.add_argument("--out", type=Path, default=Path("data/s2s") / grammars.DEFAULT)
    ap.add_argument("--splits", default="train,dev")
    ap.add_argument("--vocab", type=int, default=6000, help="pieces in the vocabulary, specials and slots included")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pieces", type=Path, default=None, help="also write xz pieces under 16 MiB here")
    ap.add_argument("--shards", default=":", help="START:END[:STEP], the train shards to pack (0::4: every fourth)")


def run(args) -> int:
    cut = slice(*(int(x) if x else None for x in args.shards.split(":")))
    pack(args.data, args.corpus, args.out, args.splits.split(","), args.vocab, args.jobs, args.pieces, cut)
    return 0
