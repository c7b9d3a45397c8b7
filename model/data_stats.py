"""`anycode dataset stats`: the figures of docs/data.md, measured on the built dataset."""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

from anycode import grammars
from anycode.model.dataset import Shard, list_split_files, shard_paths
from anycode.model.paths import context_paths, generated_leaves, target_steps
from anycode.model.vocab import Vocab
from anycode.model.workers import process_pool

NODE_BUCKETS = [(2, 2), (3, 3), (4, 4), (5, 6), (7, 9), (10, 14), (15, 10**9)]
SUB_BUCKETS = [(0, 0), (1, 1), (2, 2), (3, 4), (5, 8), (9, 10**9)]


def bucket(n: int, buckets) -> str:
    for lo, hi in buckets:
        if lo <= n <= hi:
            return str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
    return "?"


def round_trip_file(path: str, lang_id: str) -> tuple[int, int, Counter, dict]:
    lang = grammars.get(lang_id)
    parser = lang.new_parser()
    try:
        source = Path(path).read_bytes()
        tree = parser.parse(source)
    except (OSError, ValueError):
        return 0, 0, Counter(), {}
    if tree.root_node.has_error:
        return 0, 0, Counter(), {}
    sys.setrecursionlimit(10000)
    try:
        root = lang.convert(tree.root_node)
    except RecursionError:
        return 0, 0, Counter(), {}
    total = ok = 0
    fails: Counter = Counter()
    examples: dict = {}
    for n in root.walk():
        if lang.base_type(n.type) in lang.EXPRESSION_TYPES and n.size() > 1:
            total += 1
            if lang.round_trips(n, parser):
                ok += 1
            else:
                fails[n.type] += 1
                examples.setdefault(n.type, source[n.start_byte: n.end_byte].decode("utf8", "replace")[:80])
    return total, ok, fails, examples


def round_trip_rate(corpus: Path, split: str, jobs: int, lang) -> dict:
    from tqdm import tqdm

    root = Path(corpus) / split
    files = [str(root / f) for f in list_split_files(corpus, split, lang)]
    total = ok = 0
    fails: Counter = Counter()
    examples: dict = {}
    with process_pool(jobs) as pool:
        for t, o, f, e in tqdm(pool.map(round_trip_file, files, [lang.id] * len(files), chunksize=32), total=len(files),
                               desc="round trip", unit="file"):
            total, ok = total + t, ok + o
            fails.update(f)
            for k, v in e.items():
                examples.setdefault(k, v)
    return {"expressions": total, "round_trip": ok, "rate": ok / max(total, 1),
            "failures": [(k, c, examples[k]) for k, c in fails.most_common(15)]}


def example_stats(data_dir: Path, split: str, vocab: Vocab, sample: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    shards = [Shard(p) for p in shard_paths(data_dir, split)]
    index = [(s, i) for s, sh in enumerate(shards) for i in range(len(sh))]
    picked = rng.sample(index, min(sample, len(index)))
    nodes_hist: Counter = Counter()
    subs_hist: Counter = Counter()
    paths_per_step: list[int] = []
    steps_per_example: list[int] = []
    count_cap = length_cap = 0
    values = in_vocab = copy_whole = copy_parts = unreachable = 0
    target_subs = target_subs_in_vocab = 0
    ctx_subs = ctx_subs_in_vocab = 0
    for s, i in picked:
        tree, h = shards[s].example(i)
        ctx = context_paths(tree, h)
        count_cap += ctx.dropped_far > 0
        length_cap += ctx.dropped_long > 0
        whole = {tree.values[l] for l in ctx.leaves if tree.values[l] is not None}
        ctx_pieces = set(whole)
        for l in ctx.leaves:
            for sub in tree.leaf_value(l):
                ctx_pieces.add(sub)
                ctx_subs += 1
                ctx_subs_in_vocab += sub in vocab.sub_id
        steps = target_steps(tree, h, whole)
        steps_per_example.append(len(steps))
        n_nodes = tree.end[h] - h
        nodes_hist[bucket(n_nodes, NODE_BUCKETS)] += 1
        n_subs = 0
        for n in range(h, tree.end[h]):
            if tree.lang.kind_of(tree.types[n]) != "valued":
                continue
            subs = tree.lang.subtokens(tree.types[n], tree.values[n] or "")
            n_subs += len(subs)
            target_subs += len(subs)
            target_subs_in_vocab += sum(x in vocab.sub_id for x in subs)
            values += 1
            if all(x in vocab.sub_id for x in subs):
                in_vocab += 1
            elif tree.values[n] in whole:
                copy_whole += 1
            elif all(x in vocab.sub_id or x in ctx_pieces for x in subs):
                copy_parts += 1
            else:
                unreachable += 1
        subs_hist[bucket(n_subs, SUB_BUCKETS)] += 1
        for t in range(0, len(steps), 3):   # every third step keeps this pass quick
            paths_per_step.append(len(ctx.leaves) + len(generated_leaves(tree, h, steps, t)))
    n = len(picked)
    q = statistics.quantiles(paths_per_step, n=20)
    return {
        "sampled_examples": n,
        "target_nodes": {k: nodes_hist[k] / n for k in [bucket(lo, NODE_BUCKETS) for lo, _ in NODE_BUCKETS]},
        "target_subtokens": {k: subs_hist[k] / n for k in [bucket(lo, SUB_BUCKETS) for lo, _ in SUB_BUCKETS]},
        "steps_per_example": {"mean": statistics.mean(steps_per_example), "median": statistics.median(steps_per_example)},
        "paths_per_step": {"mean": statistics.mean(paths_per_step), "median": statistics.median(paths_per_step),
                           "p95": q[18], "max": max(paths_per_step)},
        "count_cap_bites": count_cap / n, "length_cap_bites": length_cap / n,
        "target_values": values,
        "value_from_vocab": in_vocab / max(values, 1),
        "value_needs_whole_copy": copy_whole / max(values, 1),
        "value_needs_subtoken_copy": copy_parts / max(values, 1),
        "value_unreachable": unreachable / max(values, 1),
        "target_subtoken_vocab_coverage": target_subs_in_vocab / max(target_subs, 1),
        "context_subtoken_vocab_coverage": ctx_subs_in_vocab / max(ctx_subs, 1),
    }


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, default=Path("data/dataset/python"))
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus/python"))
    ap.add_argument("--lang", default=grammars.DEFAULT, choices=grammars.ids(), help="the corpus's language")
    ap.add_argument("--splits", default="train,dev,test")
    ap.add_argument("--sample", type=int, default=20000, help="examples sampled per split")
    ap.add_argument("--round-trip", action="store_true", help="also print+parse every expression of the train corpus")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=Path("data/dataset/python/stats.json"))


def run_stats(args) -> int:
    data = Path(args.data)
    vocab = Vocab.load(data / "vocab.json")
    summary = json.loads((data / "summary.json").read_text())
    out = {"summary": summary, "vocab": {"node_types": len(vocab.node_types), "subtokens": len(vocab.subtokens)}}
    for split in args.splits.split(","):
        print(f"{split}: sampling examples", file=sys.stderr)
        out[split] = example_stats(data, split, vocab, args.sample)
    if args.round_trip:
        out["round_trip"] = round_trip_rate(Path(args.corpus), "train", args.jobs,
                                            grammars.get(getattr(args, "lang", None) or grammars.DEFAULT))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0
