"""Training features computed once per dataset, and batches cut from them without Python loops.

`batching.featurize` walks a tree for every example (about 1.2 ms of CPU each): done in DataLoader
workers for every batch of every epoch, that alone caps training far below what a GPU does with the
arithmetic.  Here every example of a split is featurized once (`build`, in parallel over shards)
and stored as ragged arrays, one directory of .npy files per shard, memory-mapped by the loader.
A batch (`collate`) is then a few dozen vectorized gathers: each example's context set, its root
path to p and the chains from p down to every node some step expands, the generated-leaf paths and
each step's set of them, the labels, and the file tokens (deduplicated across the batch).  For the
paper's wiring (`paper=True`, a `PaperBatch`) also the context leaves' paths continued from p down
the hole (one packed LSTM call, laid out here) and every step's own S_t, steps grouped by set size
(`paper_buckets`).  `model/steps.py` runs the network on either.

Per example (ragged arrays with offsets `*_off`, one row per example + 1):
  leaf_*   the context leaves: value ids [8], prefix types / child indices [max_length], length,
           copy symbols [9] (local symbol ids: the example's own `features.Symbols`)
  root_*   the root path root -> p (nodes)
  pi_*     the hole nodes some step expands, preorder; chain_* the nodes from p's child down to each
  gen_*    the generated-leaf paths (value ids, copy symbols, nodes leaf -> pi)
  step_*   every step: pi (-1 = p), child index, is value, label; sgen_* its generated set
  file_*   the file tokens: row of the split's token table (`ftok`) and symbol id
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from anycode.model import batching
from anycode.model.dataset import Shard, shard_paths
from anycode.model.features import MAX_COPY_POSITIONS, MAX_VALUE_SUBTOKENS
from anycode.model.vocab import Vocab
from anycode.model.workers import process_pool

PACK_VERSION = 1
COPY_COLUMNS = 1 + MAX_COPY_POSITIONS
GROUPS = ("leaf", "root", "pi", "gen", "step", "file")


class FeatureError(RuntimeError):
    """A feature store that cannot be read (missing, partial, another version): says which file."""


# ---------------------------------------------------------------- one shard -> arrays


def pack_examples(examples: list[batching.ExampleArrays], max_length: int) -> dict[str, np.ndarray]:
    """Ragged arrays of many featurized examples (see the module's docstring)."""
    cols: dict[str, list] = {k: [] for k in (
        "leaf_values", "leaf_types", "leaf_index", "leaf_len", "leaf_copy", "root_types", "root_index",
        "chain_len", "chain_types", "chain_index", "gen_values", "gen_copy", "gen_len", "gen_types", "gen_index",
        "step_pi", "step_child", "step_is_value", "step_label", "sgen_len", "sgen_rows", "file_values",
        "file_symbols")}
    counts = {g: [] for g in GROUPS}
    for x in examples:
        n = x.n_leaves
        t = np.zeros((n, max_length), np.uint8)
        ix = np.zeros((n, max_length), np.uint8)
        t[:, : x.prefix_types.shape[1]] = x.prefix_types
        ix[:, : x.prefix_index.shape[1]] = x.prefix_index
        cols["leaf_values"].append(x.leaf_values.astype(np.int16))
        cols["leaf_types"].append(t)
        cols["leaf_index"].append(ix)
        cols["leaf_len"].append(x.prefix_len.astype(np.uint8))
        cols["leaf_copy"].append(x.leaf_copy.astype(np.int32))
        cols["root_types"].append(x.root_types.astype(np.uint8))
        cols["root_index"].append(x.root_index.astype(np.uint8))
        chains: list[list[int]] = []
        for k, par in enumerate(x.pi_parent):
            chains.append((chains[par] if par >= 0 else []) + [k])
        for c in chains:
            cols["chain_len"].append(len(c))
            cols["chain_types"].extend(x.pi_type[j] for j in c)
            cols["chain_index"].extend(x.pi_index[j] for j in c)
        cols["gen_values"].append(x.gen_values.astype(np.int16))
        cols["gen_copy"].append(x.gen_copy.astype(np.int32))
        cols["gen_len"].append(x.gen_len.astype(np.uint8))
        for g in range(len(x.gen_len)):
            cols["gen_types"].append(x.gen_types[g, : x.gen_len[g]].astype(np.uint8))
            cols["gen_index"].append(x.gen_index[g, : x.gen_len[g]].astype(np.uint8))
        cols["step_pi"].append(x.step_pi.astype(np.int16))
        cols["step_child"].append(x.step_child.astype(np.uint8))
        cols["step_is_value"].append(x.step_is_value.astype(bool))
        cols["step_label"].append(x.step_label.astype(np.int32))
        for rows in x.step_gen:
            cols["sgen_len"].append(len(rows))
            cols["sgen_rows"].extend(rows)
        cols["file_values"].append(x.file_values.astype(np.int16))
        cols["file_symbols"].append(x.file_symbols.astype(np.int32))
        for g, c in zip(GROUPS, (n, len(x.root_types), len(x.pi_nodes), len(x.gen_len), len(x.step_label),
                                 len(x.file_symbols))):
            counts[g].append(c)

    def cat(name, dtype, width=None):
        parts = cols[name]
        if parts and isinstance(parts[0], np.ndarray):
            return np.concatenate(parts).astype(dtype)
        a = np.array(parts, dtype)
        return a.reshape(-1, width) if width else a

    out = {f"{g}_off": np.concatenate([[0], np.cumsum(counts[g])]).astype(np.int64) for g in GROUPS}
    out.update(
        leaf_values=cat("leaf_values", np.int16).reshape(-1, MAX_VALUE_SUBTOKENS),
        leaf_types=cat("leaf_types", np.uint8).reshape(-1, max_length),
        leaf_index=cat("leaf_index", np.uint8).reshape(-1, max_length),
        leaf_len=cat("leaf_len", np.uint8), leaf_copy=cat("leaf_copy", np.int32).reshape(-1, COPY_COLUMNS),
        root_types=cat("root_types", np.uint8), root_index=cat("root_index", np.uint8),
        chain_off=np.concatenate([[0], np.cumsum(cols["chain_len"], dtype=np.int64)]).astype(np.int64),
        chain_types=cat("chain_types", np.uint8), chain_index=cat("chain_index", np.uint8),
        gen_values=cat("gen_values", np.int16).reshape(-1, MAX_VALUE_SUBTOKENS),
        gen_copy=cat("gen_copy", np.int32).reshape(-1, COPY_COLUMNS), gen_len=cat("gen_len", np.uint8),
        gen_node_off=np.concatenate([[0], np.cumsum(cat("gen_len", np.int64))]).astype(np.int64),
        gen_types=(np.concatenate(cols["gen_types"]) if cols["gen_types"] else np.zeros(0, np.uint8)),
        gen_index=(np.concatenate(cols["gen_index"]) if cols["gen_index"] else np.zeros(0, np.uint8)),
        step_pi=cat("step_pi", np.int16), step_child=cat("step_child", np.uint8),
        step_is_value=cat("step_is_value", bool), step_label=cat("step_label", np.int32),
        sgen_off=np.concatenate([[0], np.cumsum(cols["sgen_len"], dtype=np.int64)]).astype(np.int64),
        sgen_rows=np.array(cols["sgen_rows"], np.int16),
        file_symbols=cat("file_symbols", np.int32),
    )
    # file tokens: a table of the shard's distinct values, each example's rows into it
    vals = np.ascontiguousarray(cat("file_values", np.int16).reshape(-1, MAX_VALUE_SUBTOKENS))
    uniq, inv = np.unique(vals.view(f"V{2 * MAX_VALUE_SUBTOKENS}").ravel(), return_inverse=True)
    out["ftok_local"] = np.frombuffer(uniq.tobytes(), np.int16).reshape(-1, MAX_VALUE_SUBTOKENS).copy()
    out["file_tok_local"] = inv.astype(np.int32).reshape(-1)
    return out


def featurize_shard(path: Path, vocab: Vocab, max_paths: int, max_length: int, file_tokens: int,
                    limit: int | None = None) -> dict[str, np.ndarray]:
    """Every example of a shard (or its first `limit`), in order; a function's tree is built once."""
    shard = Shard(path)
    a = shard.arrays
    n = len(shard) if limit is None else min(limit, len(shard))
    out, last, tree = [], -1, None
    for i in range(n):
        f = int(a["e_func"][i])
        if f != last:
            tree, last = shard.tree(f), f
        out.append(batching.featurize(tree, int(a["e_hole"][i]), vocab, max_paths, max_length, file_tokens))
    return pack_examples(out, max_length)


def _check_widths(vocab: Vocab) -> None:
    if len(vocab.node_types) > 255:
        raise ValueError("packed features store node types as uint8: at most 255 node types")


# ---------------------------------------------------------------- the store on disk


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """One .npy per array, then `done.json` (sizes): a folder without it is a partial write."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", v)
    (tmp / "done.json").write_text(json.dumps({k: list(v.shape) for k, v in arrays.items()}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_arrays(folder: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    done = folder / "done.json"
    if not done.exists():
        raise FeatureError(f"{folder}: incomplete feature shard (no done.json); delete it and build again")
    shapes = json.loads(done.read_text())
    out = {}
    for k, shape in shapes.items():
        f = folder / f"{k}.npy"
        try:
            out[k] = np.load(f, mmap_mode="r" if mmap else None)
        except (OSError, ValueError) as e:
            raise FeatureError(f"{f}: unreadable feature array ({e}); delete {folder} and build again") from e
        if list(out[k].shape) != shape:
            raise FeatureError(f"{f}: shape {list(out[k].shape)}, expected {shape} (a partial file?); "
                               f"delete {folder} and build again")
    return out


def store_key(data_dir: Path, split: str, vocab: Vocab, max_paths: int, max_length: int, file_tokens: int) -> dict:
    shards = [{"name": p.name, "bytes": p.stat().st_size} for p in shard_paths(data_dir, split)]
    vh = hashlib.sha1(json.dumps([vocab.node_types, vocab.subtokens]).encode()).hexdigest()[:16]
    return {"version": PACK_VERSION, "split": split, "shards": shards, "vocab": vh, "max_paths": max_paths,
            "max_length": max_length, "file_tokens": file_tokens}


def _build_one(args):
    path, out, vocab, max_paths, max_length, file_tokens = args
    arrays = featurize_shard(Path(path), vocab, max_paths, max_length, file_tokens)
    save_arrays(Path(out), arrays)
    return len(arrays["step_off"]) - 1


def build(data_dir: Path, split: str, out_dir: Path, vocab: Vocab, max_paths: int = 200, max_length: int = 24,
          file_tokens: int = 0, jobs: int | None = None, log=print) -> Path:
    """Featurize every shard of `split` into out_dir/split (reusing shards already done for the same
    key); returns that folder."""
    _check_widths(vocab)
    folder = Path(out_dir) / split
    key = store_key(data_dir, split, vocab, max_paths, max_length, file_tokens)
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("key") == key:
        return folder
    # a shard's features depend on its content (named by its hash) and on these settings: shards done
    # under the same settings are reused when others arrive (a dataset carried in pieces)
    settings = {k: v for k, v in key.items() if k != "shards"}
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "settings.json").exists() and json.loads((folder / "settings.json").read_text()) != settings:
        shutil.rmtree(folder)
        folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(settings))
    meta_path.unlink(missing_ok=True)
    srcs = shard_paths(data_dir, split)
    todo = [(str(p), str(folder / p.stem), vocab, max_paths, max_length, file_tokens) for p in srcs
            if not (folder / p.stem / "done.json").exists()]
    t0 = time.time()
    jobs = jobs or max(1, (os.cpu_count() or 2) - 1)
    if todo:
        log(f"features: {split}, {len(todo)} of {len(srcs)} shards to featurize on {jobs} processes")
        with process_pool(jobs) as pool:
            for k, _ in enumerate(pool.map(_build_one, todo)):
                if (k + 1) % max(1, len(todo) // 10) == 0:
                    log(f"features: {split} {k + 1}/{len(todo)} shards, {time.time() - t0:.0f}s")
    _merge_file_tokens(folder, [p.stem for p in srcs])
    meta_path.write_text(json.dumps({"key": key, "shards": [p.stem for p in srcs], "seconds": time.time() - t0}))
    return folder


def _merge_file_tokens(folder: Path, stems: list[str]) -> None:
    """One table of file-token values for the split (`ftok.npy`), and each shard's rows into it
    (`file_tok.npy`): the loader encodes each distinct file token of a batch once."""
    index: dict[bytes, int] = {}
    for stem in stems:
        sub = folder / stem
        local = np.load(sub / "ftok_local.npy")
        rows = np.array([index.setdefault(r.tobytes(), len(index)) for r in local], np.int32)
        np.save(sub / "ftok_map.npy", rows)
    table = np.zeros((max(len(index), 1), MAX_VALUE_SUBTOKENS), np.int16)
    for b, j in index.items():
        table[j] = np.frombuffer(b, np.int16)
    np.save(folder / "ftok.npy", table)


class PackedSplit:
    """A featurized split, memory-mapped: `collate(ids)` cuts batches from it."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        meta = folder / "meta.json"
        if not meta.exists():
            raise FeatureError(f"{folder}: no finished feature store (meta.json missing); build it with "
                               f"packed.build (anycode train does)")
        self.folder = folder
        self.meta = json.loads(meta.read_text())
        self.shards = []
        for stem in self.meta["shards"]:
            a = load_arrays(folder / stem)
            f = folder / stem / "ftok_map.npy"
            try:
                a["ftok_map"] = np.load(f)
            except (OSError, ValueError) as e:
                raise FeatureError(f"{f}: unreadable ({e}); delete {folder / 'meta.json'} and build again") from e
            self.shards.append(a)
        try:
            self.ftok = np.load(folder / "ftok.npy")
        except (OSError, ValueError) as e:
            raise FeatureError(f"{folder / 'ftok.npy'}: unreadable ({e})") from e
        sizes = np.array([len(a["step_off"]) - 1 for a in self.shards], np.int64)
        self.shard_of = np.repeat(np.arange(len(sizes)), sizes)
        self.local = np.concatenate([np.arange(n) for n in sizes]) if len(sizes) else np.zeros(0, np.int64)
        self.steps = np.concatenate([np.diff(a["step_off"]) for a in self.shards])
        self.leaves = np.concatenate([np.diff(a["leaf_off"]) for a in self.shards])

    def __len__(self) -> int:
        return len(self.steps)

    def collate(self, ids, paper: bool = False) -> "FastBatch":
        ids = np.asarray(ids, np.int64)
        order = np.lexsort((self.local[ids], self.shard_of[ids]))
        ids = ids[order]
        parts = []
        for k in np.unique(self.shard_of[ids]):
            loc = self.local[ids[self.shard_of[ids] == k]]
            parts.append(_take(self.shards[k], loc))
        return collate(_concat(parts), self.ftok, paper)


# ---------------------------------------------------------------- ragged gathers


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated aranges [s, s + n) for each (s, n)."""
    lens = np.asarray(lens, np.int64)
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.concatenate([[0], np.cumsum(lens)[:-1]])
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - first, lens)


def _sub(a, off_name, ids):
    off = a[off_name]
    lo, hi = off[ids], off[ids + 1]
    return ranges(lo, hi - lo), (hi - lo)


def _take(a: dict, ids: np.ndarray) -> dict:
    """The ragged arrays of examples `ids` of one shard, with their per-example counts."""
    out = {}
    rows = {}
    for g in GROUPS:
        rows[g], out[f"n_{g}"] = _sub(a, f"{g}_off", ids)
    for k in ("leaf_values", "leaf_types", "leaf_index", "leaf_len", "leaf_copy"):
        out[k] = a[k][rows["leaf"]]
    for k in ("root_types", "root_index"):
        out[k] = a[k][rows["root"]]
    chain_rows, chain_len = _sub(a, "chain_off", rows["pi"])
    out["chain_len"] = chain_len
    out["chain_types"], out["chain_index"] = a["chain_types"][chain_rows], a["chain_index"][chain_rows]
    for k in ("gen_values", "gen_copy", "gen_len"):
        out[k] = a[k][rows["gen"]]
    node_rows, _ = _sub(a, "gen_node_off", rows["gen"])
    out["gen_types"], out["gen_index"] = a["gen_types"][node_rows], a["gen_index"][node_rows]
    for k in ("step_pi", "step_child", "step_is_value", "step_label"):
        out[k] = a[k][rows["step"]]
    sg_rows, sg_len = _sub(a, "sgen_off", rows["step"])
    out["sgen_len"], out["sgen_rows"] = sg_len, a["sgen_rows"][sg_rows]
    out["file_tok"] = a["ftok_map"][a["file_tok_local"][rows["file"]]]
    out["file_symbols"] = a["file_symbols"][rows["file"]]
    return out


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ---------------------------------------------------------------- a batch


@dataclass
class FastBatch:
    """Every step of a batch of examples, laid out for `steps.batch_loss` (context_once wiring).

    Example-major layouts: context sets [E, N] (slot e * N + j), steps [E, T] (slot e * T + t), value
    steps [E, Tv]; `*_len` arrays stay on the host too (`lengths`), for the packed LSTM."""
    n_examples: int
    n_ctx: int                     # N: the widest context set
    n_steps: int                   # T: the most steps of an example
    n_value_steps: int             # Tv
    ctx_values: np.ndarray         # [R, 8] every context leaf of every example
    ctx_types: np.ndarray          # [R, Lp]
    ctx_index: np.ndarray          # [R, Lp]
    ctx_len: np.ndarray            # [R]
    ctx_slot: np.ndarray           # [R] e * N + j
    ctx_mask: np.ndarray           # [E, N]
    ctx_copy: np.ndarray           # [E, N, 9] symbols each leaf's copy columns vote for, -1 none
    root_types: np.ndarray         # [E, Lr] root -> p
    root_index: np.ndarray
    root_len: np.ndarray           # [E]
    chain_types: np.ndarray        # [K, D] p's child -> pi, for every expanded hole node
    chain_index: np.ndarray
    chain_len: np.ndarray          # [K]
    chain_example: np.ndarray      # [K]
    gen_values: np.ndarray         # [G, 8] generated-leaf paths
    gen_types: np.ndarray          # [G, Lg]
    gen_index: np.ndarray
    gen_len: np.ndarray            # [G]
    gen_copy: np.ndarray           # [G + 1, 9] row 0: none
    step_child: np.ndarray         # [S]
    step_is_value: np.ndarray      # [S]
    step_label: np.ndarray         # [S]
    step_example: np.ndarray       # [S]
    step_slot: np.ndarray          # [S] e * T + t
    step_root: np.ndarray          # [S] row of [root states at p (E); chain ends (K)]
    set_step: np.ndarray           # [S'] the steps whose generated set is not empty
    set_rows: np.ndarray           # [S', Gmax] 1 + gen row, 0 = none
    set_mask: np.ndarray           # [S', Gmax]
    value_step: np.ndarray         # [Sv] step of each value step
    value_slot: np.ndarray         # [Sv] e * Tv + k
    value_set: np.ndarray          # [Sv, Gmax] 1 + gen row of each value step's generated set, 0 = none
    node_step: np.ndarray          # [Sn]
    ftok_values: np.ndarray        # [U, 8] the batch's distinct file tokens
    file_rows: np.ndarray          # [E, F] 1 + row of ftok_values, 0 = none
    file_symbols: np.ndarray       # [E, F] -1 = none

    @property
    def n_targets(self) -> int:
        return len(self.step_label)

    @property
    def n_value_targets(self) -> int:
        return len(self.value_step)

    def lengths(self) -> dict:
        return {"ctx": self.ctx_len, "root": self.root_len, "chain": self.chain_len, "gen": self.gen_len}

    def to(self, device, non_blocking: bool = True) -> "DeviceBatch":
        import torch
        t = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                t[f.name] = torch.from_numpy(v).to(device, non_blocking=non_blocking)
            else:
                t[f.name] = v
        return DeviceBatch(t, {k: torch.from_numpy(v) for k, v in self.lengths().items()})

    def pin_memory(self) -> "PinnedBatch":
        import torch
        return PinnedBatch(self, {f.name: torch.from_numpy(getattr(self, f.name)).pin_memory()
                                  for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)})


class PinnedBatch:
    """A FastBatch with its arrays in pinned host memory (DataLoader pin_memory): copies overlap."""

    def __init__(self, batch: FastBatch, pinned: dict):
        self.batch, self.pinned = batch, pinned
        self.n_examples, self.n_targets = batch.n_examples, batch.n_targets
        self.n_value_targets = batch.n_value_targets

    def to(self, device, non_blocking: bool = True) -> "DeviceBatch":
        import torch
        t = {f.name: getattr(self.batch, f.name) for f in fields(self.batch)}
        t.update({k: v.to(device, non_blocking=non_blocking) for k, v in self.pinned.items()})
        return DeviceBatch(t, {k: torch.from_numpy(v) for k, v in self.batch.lengths().items()})


class DeviceBatch:
    """A FastBatch's arrays as tensors on the device (attributes), host lengths in `.host`."""

    def __init__(self, tensors: dict, host: dict):
        self.__dict__.update(tensors)
        self.host = host

    @property
    def n_targets(self) -> int:
        return int(self.step_label.shape[0])


def _pad_ragged(values: np.ndarray, lens: np.ndarray, fill=0, width: int | None = None) -> np.ndarray:
    """Flat ragged values -> [len(lens), max(lens)] padded."""
    lens = np.asarray(lens, np.int64)
    w = int(lens.max()) if len(lens) and width is None else (width or 1)
    out = np.full((len(lens), max(w, 1)), fill, values.dtype if values.size else np.int64)
    if values.size:
        row = np.repeat(np.arange(len(lens)), lens)
        col = np.arange(len(values)) - np.repeat(np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        out[row, col] = values
    return out


def _within(lens: np.ndarray) -> np.ndarray:
    """Position of every element inside its group, for groups of sizes `lens` laid end to end."""
    lens = np.asarray(lens, np.int64)
    return np.arange(int(lens.sum())) - np.repeat(np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)


def collate(x: dict, ftok: np.ndarray, paper: bool = False) -> FastBatch:
    """A FastBatch from the ragged arrays of some examples (`_take`); with `paper`, a PaperBatch."""
    i64 = lambda a: np.asarray(a, np.int64)
    E = len(x["n_leaf"])
    nl, nst = i64(x["n_leaf"]), i64(x["n_step"])
    ex_of_leaf = np.repeat(np.arange(E), nl)
    N = -(-max(int(nl.max()), 1) // 8) * 8
    ctx_slot = ex_of_leaf * N + _within(nl)
    ctx_mask = np.zeros(E * N, bool)
    ctx_mask[ctx_slot] = True
    ctx_copy = np.full((E * N, COPY_COLUMNS), -1, np.int64)
    ctx_copy[ctx_slot] = x["leaf_copy"]
    lp = max(int(x["leaf_len"].max()) if len(x["leaf_len"]) else 1, 1)

    # root paths and the chains below p; a step's R_t is row e (pi = p) or E + its chain
    n_pi = i64(x["n_pi"])
    pi_base = np.concatenate([[0], np.cumsum(n_pi)[:-1]])
    chain_example = np.repeat(np.arange(E), n_pi)
    ex_of_step = np.repeat(np.arange(E), nst)
    spi = i64(x["step_pi"])
    step_root = np.where(spi < 0, ex_of_step, E + pi_base[ex_of_step] + spi)
    T = max(int(nst.max()), 1)
    step_slot = ex_of_step * T + _within(nst)

    # generated sets: local gen rows -> rows of the batch
    ng = i64(x["n_gen"])
    gen_base = np.concatenate([[0], np.cumsum(ng)[:-1]])
    sg_len = i64(x["sgen_len"])
    sg_rows = i64(x["sgen_rows"]) + np.repeat(gen_base[ex_of_step], sg_len)
    sets = _pad_ragged(sg_rows + 1, sg_len)                              # [S, Gmax], 0 = none
    has = sg_len > 0
    set_step = np.nonzero(has)[0]
    is_value = np.asarray(x["step_is_value"], bool)
    value_step = np.nonzero(is_value)[0]
    n_val = np.bincount(ex_of_step[value_step], minlength=E)
    Tv = max(int(n_val.max()) if E else 0, 1)
    value_slot = ex_of_step[value_step] * Tv + _within(n_val)

    # file tokens: the batch's distinct ones, each example's rows into them
    nf = i64(x["n_file"])
    uniq, inv = np.unique(i64(x["file_tok"]), return_inverse=True)
    F = max(int(nf.max()) if E else 0, 1)
    file_rows = _pad_ragged(inv.astype(np.int64) + 1, nf, 0, F)
    file_symbols = _pad_ragged(i64(x["file_symbols"]), nf, -1, F)

    gen_copy = np.concatenate([np.full((1, COPY_COLUMNS), -1, np.int64), i64(x["gen_copy"])])
    fields_ = dict(
        n_examples=E, n_ctx=N, n_steps=T, n_value_steps=Tv,
        ctx_values=i64(x["leaf_values"]), ctx_types=i64(x["leaf_types"][:, :lp]),
        ctx_index=i64(x["leaf_index"][:, :lp]), ctx_len=i64(x["leaf_len"]), ctx_slot=ctx_slot,
        ctx_mask=ctx_mask.reshape(E, N), ctx_copy=ctx_copy.reshape(E, N, COPY_COLUMNS),
        root_types=_pad_ragged(i64(x["root_types"]), x["n_root"]), root_index=_pad_ragged(i64(x["root_index"]), x["n_root"]),
        root_len=i64(x["n_root"]),
        chain_types=_pad_ragged(i64(x["chain_types"]), x["chain_len"]),
        chain_index=_pad_ragged(i64(x["chain_index"]), x["chain_len"]), chain_len=i64(x["chain_len"]),
        chain_example=chain_example,
        gen_values=i64(x["gen_values"]), gen_types=_pad_ragged(i64(x["gen_types"]), x["gen_len"]),
        gen_index=_pad_ragged(i64(x["gen_index"]), x["gen_len"]), gen_len=i64(x["gen_len"]), gen_copy=gen_copy,
        step_child=i64(x["step_child"]), step_is_value=is_value, step_label=i64(x["step_label"]),
        step_example=ex_of_step, step_slot=step_slot, step_root=step_root,
        set_step=set_step, set_rows=sets[set_step], set_mask=sets[set_step] > 0,
        value_step=value_step, value_slot=value_slot, value_set=sets[value_step],
        node_step=np.nonzero(~is_value)[0],
        ftok_values=i64(ftok[uniq]) if len(uniq) else np.zeros((0, MAX_VALUE_SUBTOKENS), np.int64),
        file_rows=file_rows, file_symbols=file_symbols,
    )
    if not paper:
        return FastBatch(**fields_)
    return PaperBatch(**fields_, **paper_fields(x, sg_rows, sg_len))


def collate_examples(examples: list[batching.ExampleArrays], max_length: int = 24, paper: bool = False) -> FastBatch:
    """A FastBatch (a PaperBatch with `paper`) straight from featurized examples (no store): the dev
    set, tests."""
    a = pack_examples(examples, max_length)
    a["ftok_map"] = np.arange(len(a["ftok_local"]))
    return collate(_take(a, np.arange(len(examples))), a["ftok_local"], paper)


# ---------------------------------------------------------------- the paper's wiring


@dataclass
class PaperBatch(FastBatch):
    """A FastBatch with every step's own S_t (the paper's wiring, SLMConfig.context_once False).

    The states of the context leaves (and of the root path) at the hole's nodes: from each one's
    state at p, an LSTM along every *maximal* chain of expanded hole nodes (p's child down to an
    expanded node none of whose children is expanded); every expanded node lies on one, so the
    outputs of that call hold each (leaf, node) state once.  The call's packed layout is made here:
    rows sorted by length (`q_*`, `q_batch_sizes` on the host), inputs time-major.

    The memory the sets read from: [top state at p of every context leaf (R) and root path (E);
    the chain call's outputs; generated-leaf encodings (G)].  Steps are reordered into buckets of like
    set size (`buckets`: per bucket its steps, padded width and value steps); every per-step array
    below is in that order, and `order` gives each one's step in the batch's own order."""
    q_src: np.ndarray              # [Q] initial state of each chain row (packed order): row of [ctx; root]
    q_types: np.ndarray            # [sum len] the chain nodes, time-major packed
    q_index: np.ndarray
    q_batch_sizes: np.ndarray      # [Dmax] rows still running at each depth (host)
    order: np.ndarray              # [S] step of the batch at each position of the bucket order
    p_root: np.ndarray             # [S] memory row of R_t
    p_child: np.ndarray            # [S]
    p_label: np.ndarray            # [S]
    p_node: np.ndarray             # [Sn] positions of node steps
    p_value: np.ndarray            # [Sv] positions of value steps
    p_value_slot: np.ndarray       # [Sv] e * Tv + k (k: rank among its example's value steps)
    p_value_example: np.ndarray    # [Sv]
    set_memory: np.ndarray         # [sum n_b * W_b] memory rows of every bucket's sets, padded
    set_valid: np.ndarray          # [sum n_b * W_b] bool
    set_copy: np.ndarray           # [sum nv_b * W_b, 9] copy symbols of the value steps' set members
    set_flat: np.ndarray           # [sum of set sizes] position in set_memory of each real member, set after set
    set_cu: np.ndarray             # [S + 1] int32: where each set (bucket order) starts in set_flat, then its end
    buckets: tuple = ()            # per bucket: (first position, steps, width, first value step, value steps)

    def lengths(self) -> dict:
        largest = np.diff(self.set_cu).max(initial=0)
        return dict(super().lengths(), q=self.q_batch_sizes, set_max=np.array([largest], np.int64))


def bucket_widths(sizes: np.ndarray, ratio: float = 1.25) -> np.ndarray:
    """The padded width of a set of each size: a ladder of multiples of 8, each about `ratio` times
    the one before, so that padding stays a small share of the transformer's tokens while the number
    of distinct shapes (one transformer call each) stays small."""
    top = max(int(sizes.max()) if len(sizes) else 1, 1)
    ladder = [8]
    while ladder[-1] < top:
        ladder.append(max(ladder[-1] + 8, -(-int(ladder[-1] * ratio) // 8) * 8))
    ladder = np.array(ladder, np.int64)
    return ladder[np.searchsorted(ladder, sizes)]


def _chain_rows(x: dict, nl: np.ndarray, E: int):
    """The chain call's layout: maximal chains, one row per (context leaf or root path, chain)."""
    n_pi = np.asarray(x["n_pi"], np.int64)
    depth = np.asarray(x["chain_len"], np.int64)
    K = len(depth)
    pi_ex = np.repeat(np.arange(E), n_pi)
    # preorder: an expanded node's first expanded child, if any, comes right after it
    has_child = np.zeros(K, bool)
    has_child[:-1] = (pi_ex[1:] == pi_ex[:-1]) & (depth[1:] == depth[:-1] + 1)
    mx = np.nonzero(~has_child)[0]
    on_chain = np.minimum.accumulate(np.where(has_child, K, np.arange(K))[::-1])[::-1]   # first maximal >= k
    m_rank = np.zeros(K, np.int64)
    m_rank[mx] = np.arange(len(mx))
    m_ex = pi_ex[mx]
    per = nl[m_ex] + 1                                         # the example's leaves, then its root path
    q_base = np.concatenate([[0], np.cumsum(per)[:-1]]).astype(np.int64)
    q_m = np.repeat(np.arange(len(mx)), per)
    q_j = _within(per)
    ctx_off = np.concatenate([[0], np.cumsum(nl)[:-1]])
    R = int(nl.sum())
    q_src = np.where(q_j < nl[m_ex[q_m]], ctx_off[m_ex[q_m]] + q_j, R + m_ex[q_m])
    q_len = depth[mx][q_m]
    order = np.argsort(-q_len, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    counts = np.bincount(q_len, minlength=1)
    batch_sizes = np.cumsum(counts[::-1])[::-1][1:]            # rows longer than t, t = 0 .. Dmax-1
    cum_bs = np.concatenate([[0], np.cumsum(batch_sizes)]).astype(np.int64)
    t_of = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    q_of = order[_within(batch_sizes)]
    chain_start = np.concatenate([[0], np.cumsum(depth)]).astype(np.int64)
    node = chain_start[mx[q_m[q_of]]] + t_of
    # state of (leaf j or root, expanded node k) -> row of the call's output
    at = lambda k, j: cum_bs[depth[k] - 1] + rank[q_base[m_rank[on_chain[k]]] + j]
    return dict(q_src=q_src[order], q_types=np.asarray(x["chain_types"], np.int64)[node],
                q_index=np.asarray(x["chain_index"], np.int64)[node], q_batch_sizes=batch_sizes.astype(np.int64)), \
        at, int(cum_bs[-1])


def paper_fields(x: dict, sg_rows: np.ndarray, sg_len: np.ndarray, ratio: float = 1.25) -> dict:
    """The PaperBatch's own fields (see its docstring), from `_take`'s arrays and the steps' generated
    sets (batch rows of gen_*, laid end to end step after step)."""
    i64 = lambda a: np.asarray(a, np.int64)
    nl, nst = i64(x["n_leaf"]), i64(x["n_step"])
    E, R = len(nl), int(nl.sum())
    chain, at, n_out = _chain_rows(x, nl, E)
    ex = np.repeat(np.arange(E), nst)
    S = len(ex)
    spi = i64(x["step_pi"])
    below = spi >= 0
    k = np.concatenate([[0], np.cumsum(i64(x["n_pi"]))[:-1]]).astype(np.int64)[ex] + np.maximum(spi, 0)
    ctx_off = np.concatenate([[0], np.cumsum(nl)[:-1]]).astype(np.int64)
    root = R + ex
    if below.any():
        root[below] = R + E + at(k[below], nl[ex[below]])

    # every step's set: its n_e context leaves (at p or at pi_t), then its generated leaves
    size = nl[ex] + sg_len
    el_step = np.repeat(np.arange(S), size)
    el_j = _within(size)
    el_ex = ex[el_step]
    rows = np.empty(len(el_step), np.int64)
    copy = np.empty((len(el_step), COPY_COLUMNS), np.int64)
    ctx = el_j < nl[el_ex]
    leaf = ctx_off[el_ex[ctx]] + el_j[ctx]
    copy[ctx] = x["leaf_copy"][leaf]
    low = below[el_step[ctx]]
    rows[np.nonzero(ctx)[0][~low]] = leaf[~low]
    if low.any():
        rows[np.nonzero(ctx)[0][low]] = R + E + at(k[el_step[ctx][low]], el_j[ctx][low])
    g = sg_rows                                                # the gen elements, in the same order
    rows[~ctx] = R + E + n_out + g
    copy[~ctx] = i64(x["gen_copy"])[g]

    # buckets of like set size; positions: steps in bucket order
    width = bucket_widths(size, ratio)
    order = np.lexsort((np.arange(S), width))
    pos = np.empty(S, np.int64)
    pos[order] = np.arange(S)
    widths, counts = np.unique(width[order], return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat_off = np.concatenate([[0], np.cumsum(counts * widths)]).astype(np.int64)
    el_pos = pos[el_step]
    b = np.searchsorted(start, el_pos, side="right") - 1
    flat = flat_off[b] + (el_pos - start[b]) * widths[b] + el_j
    set_memory = np.zeros(int(flat_off[-1]), np.int64)
    set_valid = np.zeros(int(flat_off[-1]), bool)
    set_memory[flat], set_valid[flat] = rows, True
    set_cu = np.concatenate([[0], np.cumsum(size[order])]).astype(np.int32)

    is_value = np.asarray(x["step_is_value"], bool)[order]
    p_value = np.nonzero(is_value)[0]
    vb = np.searchsorted(start, p_value, side="right") - 1
    nv = np.bincount(vb, minlength=len(widths)).astype(np.int64)
    vstart = np.concatenate([[0], np.cumsum(nv)[:-1]]).astype(np.int64)
    voff = np.concatenate([[0], np.cumsum(nv * widths)]).astype(np.int64)
    vrank = np.full(S, -1, np.int64)
    vrank[p_value] = np.arange(len(p_value)) - vstart[vb]
    el_v = is_value[el_pos]
    set_copy = np.full((int(voff[-1]), COPY_COLUMNS), -1, np.int64)
    set_copy[voff[b[el_v]] + vrank[el_pos[el_v]] * widths[b[el_v]] + el_j[el_v]] = copy[el_v]

    ex_v = ex[order][p_value]
    n_val = np.bincount(ex_v, minlength=E)
    Tv = max(int(n_val.max()) if E else 0, 1)
    vr = np.empty(len(ex_v), np.int64)
    vr[np.argsort(ex_v, kind="stable")] = _within(n_val)
    buckets = tuple((int(s), int(c), int(w), int(v0), int(n)) for s, c, w, v0, n in zip(start, counts, widths, vstart, nv))
    return dict(chain, order=order, p_root=root[order], p_child=i64(x["step_child"])[order],
                p_label=i64(x["step_label"])[order], p_node=np.nonzero(~is_value)[0], p_value=p_value,
                p_value_slot=ex_v * Tv + vr, p_value_example=ex_v, set_memory=set_memory, set_valid=set_valid,
                set_copy=set_copy, set_flat=np.nonzero(set_valid)[0], set_cu=set_cu, buckets=buckets)


def main(argv=None) -> int:
    """python -m anycode.model.packed DATA OUT [--splits train,dev] [--jobs N]: featurize ahead."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", default="train")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--max-paths", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=24)
    ap.add_argument("--file-tokens", type=int, default=256)
    args = ap.parse_args(argv)
    vocab = Vocab.load(args.data / "vocab.json")
    for split in args.splits.split(","):
        t0 = time.time()
        build(args.data, split, args.out, vocab, args.max_paths, args.max_length, args.file_tokens, args.jobs,
              log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
        print(f"{split}: {len(PackedSplit(args.out / split))} examples in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
