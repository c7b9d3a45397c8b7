"""Training sequences of the fill-in-the-middle baseline, from the corpus the SLM is trained on.

    anycode fim pack [--corpus data/corpus/LANG] [--out data/fim/LANG] [--splits train,dev] [--pieces DIR] [--every K]

`pack` writes each split's files (model/corpus.py's `iter_files`: the same projects and the same
split by project as the SLM's dataset) as one byte array, SPLIT.bin, with the files' start offsets in
SPLIT.idx.npy: training reads windows of it through a memory map, and a device call carries it as
xz pieces (`--pieces`).

A sequence is drawn from a position chosen uniformly over the split's bytes (so a file is drawn in
proportion to its size).  With probability `fim_rate` it is a FIM sequence (Bavarian et al. 2022):
a span starting there, of a length drawn log-uniformly between 1 and `max_middle` bytes (short spans
dominate, as the evaluation's expressions are short; cut at character boundaries, not at tokens, so
that the model learns to start and end a middle anywhere), is the middle; the text before it is the
prefix and the text after it the suffix, each cut to what fits (`fit`), and the three are put in PSM
or, with probability `spm_rate`, SPM order (`fim_sequence`), the middle ending in <eot>.  Otherwise it is
plain left-to-right text from that position.  Shorter sequences are padded; padding is never a
target.  Example k of the run comes from a generator seeded by (seed, k), so that a run resumed at
step s draws exactly the sequences it would have drawn.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anycode import grammars
from anycode.model.fim_tokenizer import EOT, MIDDLE, PAD, PREFIX, SUFFIX, encode

BYTES_PER_TOKEN = 6      # text cut to tokens * this many bytes nearly always holds that many tokens
PIECE_BYTES = 16 * 2**20 - 4096


@dataclass
class FimSettings:
    """How sequences are drawn (model/fim_train.py reads them from its config)."""
    block: int = 1024        # tokens a sequence's input holds (its targets are the same shifted by one)
    fim_rate: float = 0.9
    spm_rate: float = 0.5
    max_middle: int = 1024   # bytes


# ---------------------------------------------------------------- sequences


def fit(prefix: list[int], suffix: list[int], budget: int) -> tuple[list[int], list[int]]:
    """The end of `prefix` and the start of `suffix` that fit `budget` tokens together: each side gets
    half, and what one side does not use goes to the other."""
    half = budget // 2
    np_ = min(len(prefix), max(half, budget - len(suffix)))
    ns = min(len(suffix), budget - np_)
    return prefix[len(prefix) - np_:], suffix[:ns]


def fim_sequence(prefix: list[int], suffix: list[int], middle: list[int], spm: bool) -> list[int]:
    """PSM: <fim_prefix> P <fim_suffix> S <fim_middle> M; SPM: <fim_prefix> <fim_suffix> S <fim_middle> P M
    (the SPM variant of Bavarian et al. as StarCoder trained it: prefix and middle are contiguous).
    A training middle ends with <eot>; a prompt has none."""
    if spm:
        return [PREFIX, SUFFIX] + suffix + [MIDDLE] + prefix + middle
    return [PREFIX] + prefix + [SUFFIX] + suffix + [MIDDLE] + middle


def fim_prompt(tok, prefix: str, suffix: str, budget: int, spm: bool = False) -> list[int]:
    """The tokens that ask for the middle between `prefix` and `suffix`, in at most `budget` tokens
    (the model's block less the room left for the middle)."""
    room = budget - 3
    p = encode(tok, prefix[-room * BYTES_PER_TOKEN:])
    s = encode(tok, suffix[: room * BYTES_PER_TOKEN])
    p, s = fit(p, s, room)
    return fim_sequence(p, s, [], spm)


def char_start(data: np.ndarray, i: int, lo: int, hi: int) -> int:
    """i clamped to [lo, hi] and moved back to the first byte of its UTF-8 character (not before lo)."""
    i = min(max(i, lo), hi)
    if i == hi:
        return hi
    while i > lo and (int(data[i]) & 0xC0) == 0x80:
        i -= 1
    return i


def _text(data: np.ndarray, a: int, b: int) -> str:
    return data[a:b].tobytes().decode("utf8", "replace")


class FimExamples:
    """The sequences of one packed split: example k is a token array of length block + 1."""

    def __init__(self, folder: Path, split: str, tok, settings: FimSettings, seed: int = 0):
        self.data = np.load(Path(folder) / f"{split}.bin.npy", mmap_mode="r")
        self.starts = np.load(Path(folder) / f"{split}.idx.npy")        # file starts, then the total
        self.tok, self.s, self.seed = tok, settings, seed

    def __getitem__(self, k: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, k])
        pos = int(rng.integers(len(self.data)))
        f = int(np.searchsorted(self.starts, pos, side="right")) - 1
        lo, hi = int(self.starts[f]), int(self.starts[f + 1])
        pos = char_start(self.data, pos, lo, hi)
        if rng.random() < self.s.fim_rate:
            ids = self._fim(rng, lo, pos, hi)
        else:
            ids = self._plain(lo, pos, hi)
        out = np.full(self.s.block + 1, PAD, dtype=np.int64)
        out[: len(ids)] = ids[: self.s.block + 1]
        return out

    def _fim(self, rng: np.random.Generator, lo: int, a: int, hi: int) -> list[int]:
        """A FIM sequence of the file [lo, hi) whose middle starts at byte a."""
        n = self.s.block + 1
        length = int(math.exp(rng.uniform(0.0, math.log(self.s.max_middle))))
        b = char_start(self.data, a + length, a, hi)
        middle = encode(self.tok, _text(self.data, a, b))[: (n - 4) // 2] + [EOT]
        room = n - 3 - len(middle)
        p = encode(self.tok, _text(self.data, char_start(self.data, a - room * BYTES_PER_TOKEN, lo, a), a))
        s = encode(self.tok, _text(self.data, b, char_start(self.data, b + room * BYTES_PER_TOKEN, b, hi)))
        p, s = fit(p, s, room)
        return fim_sequence(p, s, middle, spm=bool(rng.random() < self.s.spm_rate))

    def _plain(self, lo: int, a: int, hi: int) -> list[int]:
        """Left-to-right text of the file [lo, hi) from byte a; <eot> where the file ends within it."""
        n = self.s.block + 1
        end = char_start(self.data, a + n * BYTES_PER_TOKEN, a, hi)
        ids = encode(self.tok, _text(self.data, a, end))
        return ids[:n] if len(ids) >= n or end < hi else ids + [EOT]


# ---------------------------------------------------------------- packing


def pack_split(corpus_dir: Path, split: str, out: Path, every: int = 1) -> tuple[int, int]:
    """SPLIT.bin.npy (every file's bytes, in the corpus's order; of every `every`-th project) and
    SPLIT.idx.npy (their start offsets, then the total); returns (files, bytes)."""
    from anycode.model.corpus import iter_files

    chunks, starts, total = [], [0], 0
    for _, path in iter_files(corpus_dir, split, every):
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        starts.append(total)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{split}.bin.npy", np.frombuffer(b"".join(chunks), dtype=np.uint8))
    np.save(out / f"{split}.idx.npy", np.array(starts, dtype=np.int64))
    return len(chunks), total


def write_pieces(out: Path, split: str, pieces: Path, preset: int = 9, files: list[str] | None = None) -> list[Path]:
    """The split's `files` in `out` (default SPLIT.idx.npy and SPLIT.bin.npy) xz-compressed as one
    stream (each file's length, then its bytes), cut into files under 16 MiB (pieces/SPLIT.xz.000, ...),
    listed with their sha256 and the files they hold in pieces/SPLIT.pieces.json: what device calls
    carry, a few at a time.  The seq2seq baseline packs its splits the same way (model/s2s_data.py)."""
    files = files or [f"{split}.idx.npy", f"{split}.bin.npy"]
    pieces.mkdir(parents=True, exist_ok=True)
    comp = lzma.LZMACompressor(preset=preset)
    blob = bytearray()
    for name in files:
        data = (out / name).read_bytes()
        blob += comp.compress(len(data).to_bytes(8, "little"))
        for i in range(0, len(data), 1 << 24):
            blob += comp.compress(data[i: i + (1 << 24)])
    blob += comp.flush()
    paths = []
    for k, i in enumerate(range(0, len(blob), PIECE_BYTES)):
        p = pieces / f"{split}.xz.{k:03d}"
        p.write_bytes(blob[i: i + PIECE_BYTES])
        paths.append(p)
    write_manifest(pieces, split, paths, files)
    return paths


def write_manifest(pieces: Path, split: str, paths: list[Path], files: list[str] | None = None) -> None:
    """pieces/SPLIT.pieces.json: the split's pieces in order, with their sha256, and the files they hold."""
    listed = [{"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in paths]
    m = {"split": split, "pieces": listed, **({"files": files} if files else {})}
    (pieces / f"{split}.pieces.json").write_text(json.dumps(m, indent=1))


def _files(manifest: dict) -> list[str]:
    """The files a split's pieces hold (manifests written before the field: the FIM split's two)."""
    split = manifest["split"]
    return manifest.get("files") or [f"{split}.idx.npy", f"{split}.bin.npy"]


def unpack_ready(pieces: Path, out: Path) -> list[str]:
    """Every split whose listed pieces are all in `pieces`, checked and unpacked into `out` (a split
    already there is left as it is); returns the splits unpacked now."""
    done = []
    for manifest in sorted(Path(pieces).glob("*.pieces.json")):
        m = json.loads(manifest.read_text())
        split, listed = m["split"], m["pieces"]
        if (out / _files(m)[-1]).exists() or not all((pieces / p["name"]).exists() for p in listed):
            continue
        for p in listed:
            if hashlib.sha256((pieces / p["name"]).read_bytes()).hexdigest() != p["sha256"]:
                raise SystemExit(f"error: {pieces / p['name']} is corrupt or partial; carry it again")
        read_pieces([pieces / p["name"] for p in listed], out, split, _files(m))
        done.append(split)
    return done


def read_pieces(pieces: list[Path], out: Path, split: str, files: list[str] | None = None) -> None:
    """The inverse of write_pieces: the pieces of one split, in order, back to its files (default
    SPLIT.idx.npy and SPLIT.bin.npy)."""
    data = lzma.decompress(b"".join(p.read_bytes() for p in pieces))
    out.mkdir(parents=True, exist_ok=True)
    at = 0
    for name in files or [f"{split}.idx.npy", f"{split}.bin.npy"]:
        n = int.from_bytes(data[at: at + 8], "little")
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data[at + 8: at + 8 + n])
        tmp.replace(out / name)
        at += 8 + n


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus") / grammars.DEFAULT)
    ap.add_argument("--out", type=Path, default=Path("data/fim") / grammars.DEFAULT)
    ap.add_argument("--splits", default="train,dev")
    ap.add_argument("--pieces", type=Path, default=None, help="also write xz pieces under 16 MiB here")
    ap.add_argument("--every", type=int, default=1,
                    help="pack the train split's every Nth project only (dev and test whole)")
    ap.add_argument("--unpack", type=Path, default=None,
                    help="instead: unpack into --out every split whose pieces are all in this folder")


def run(args) -> int:
    if args.unpack:
        print(f"{args.out}: unpacked {unpack_ready(args.unpack, args.out) or 'nothing new'}", file=sys.stderr)
        return 0
    for split in args.splits.split(","):
        files, total = pack_split(args.corpus, split, args.out, args.every if split == "train" else 1)
        print(f"{split}: {files} files, {total / 1e6:.1f} MB", file=sys.stderr, flush=True)
        if args.pieces:
            paths = write_pieces(args.out, split, args.pieces)
            print(f"{split}: {len(paths)} pieces, {sum(p.stat().st_size for p in paths) / 2**20:.1f} MiB",
                  file=sys.stderr, flush=True)
    return 0
