"""Featurize the train split for a context_once run within a time cap (on the device).

    python3 tools/device/featurize.py DATA FEATURES --seconds S [--jobs N] [--seed K]

`anycode train --config large` featurizes every train shard before its first step (model/packed.py,
about 2-3 ms of CPU an example: 1.57M examples are minutes of a 10-minute call).  This does the same
work in a shuffled shard order on N processes and stops at S seconds: the shards not finished by then
move out of the split (DATA/train -> DATA/train_left), so that `anycode train --features FEATURES`
finds every remaining shard done and starts at once, on the part of the split the cap allowed.
Prints how many shards and examples made it.

A dataset carried in pieces, featurized while the GPU trains: `--left` featurizes the shards left out
(DATA/train_left) until S seconds, on processes that the training run leaves idle, and moves none; the
next call without --left first moves every left-out shard whose features are done back into the split, so that the
run resumed there reads them."""
import argparse
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from pathlib import Path


def _one(args):
    from anycode.model import packed
    return args[0], packed._build_one(args)


def _move(shards: list[Path], dest: Path) -> None:
    """Move shards (each .npz with its .json) into `dest`."""
    dest.mkdir(exist_ok=True)
    for p in shards:
        for f in (p, p.with_suffix(".json")):
            shutil.move(str(f), str(dest / f.name))


def _restore(data: Path, folder: Path) -> None:
    """Move the left-out shards whose features are done back into DATA/train."""
    back = [p for p in sorted((data / "train_left").glob("shard-*.npz")) if (folder / p.stem / "done.json").exists()]
    _move(back, data / "train")
    if back:
        print(f"{len(back)} left-out shards featurized since: back in the split", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("features", type=Path)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-paths", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=24)
    ap.add_argument("--file-tokens", type=int, default=256)
    ap.add_argument("--left", action="store_true", help="featurize DATA/train_left (beside a training run); move nothing")
    a = ap.parse_args()
    from anycode.model.dataset import shard_paths
    from anycode.model.vocab import Vocab
    t0 = time.time()
    vocab = Vocab.load(a.data / "vocab.json")
    folder = a.features / "train"
    folder.mkdir(parents=True, exist_ok=True)
    if not a.left:                      # a --left call runs beside training, which reads DATA/train
        _restore(a.data, folder)
    shards = shard_paths(a.data, "train_left" if a.left else "train")
    random.Random(a.seed).shuffle(shards)
    todo = [(str(p), str(folder / p.stem), vocab, a.max_paths, a.max_length, a.file_tokens) for p in shards
            if not (folder / p.stem / "done.json").exists()]
    done = {p.stem for p in shards} - {Path(t[0]).stem for t in todo}
    examples = 0
    pool = mp.get_context("fork").Pool(a.jobs)
    it = pool.imap_unordered(_one, todo)
    try:
        while len(done) < len(shards):
            left = a.seconds - (time.time() - t0)
            if left <= 0:
                break
            try:
                path, n = it.next(timeout=left)
            except mp.TimeoutError:
                break
            done.add(Path(path).stem)
            examples += n
            print(f"{time.time() - t0:6.1f}s {len(done)}/{len(shards)} shards, {examples} examples", flush=True)
    finally:
        pool.terminate()
        pool.join()
    moved = [p for p in shards if p.stem not in done]
    for p in moved:                     # partial features of an unfinished shard
        shutil.rmtree(folder / p.stem, ignore_errors=True)
    if a.left:
        print(f"featurized {len(done)} of {len(shards)} left-out shards ({examples} examples) in "
              f"{time.time() - t0:.0f}s on {a.jobs} processes", flush=True)
        return 0
    if moved:
        _move(moved, a.data / "train_left")
    print(f"featurized {len(done)} of {len(shards)} train shards ({examples} examples here) in "
          f"{time.time() - t0:.0f}s on {a.jobs} processes; {len(moved)} left out", flush=True)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
