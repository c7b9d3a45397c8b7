"""Real examples for the model tests: a few stdlib source files through the dataset pipeline."""
from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

from anycode.grammars import python as g
from anycode.model import dataset
from anycode.model.vocab import Vocab

# stdlib modules: present wherever Python is, real code, many short functions
TRAIN_MODULES = ["textwrap", "shlex", "fnmatch", "calendar", "colorsys", "glob"]
DEV_MODULES = ["bisect", "heapq"]
TEST_MODULES = ["statistics"]


def module_file(name: str) -> str:
    import importlib
    return importlib.import_module(name).__file__


def extract(names, max_function_lines: int = dataset.MAX_FUNCTION_LINES):
    return [(f"{n}.py", dataset.extract_file(module_file(n), name=f"{n}.py", max_function_lines=max_function_lines,
                                             lang=g.PYTHON)) for n in names]


@functools.lru_cache(maxsize=1)
def real_examples():
    out = []
    for _, res in extract(TRAIN_MODULES):
        for flat, holes, _ in res.functions:
            out += [(flat, h) for h in holes]
    return out


def vocab_of(examples, size=300) -> Vocab:
    types, subs = Counter(), Counter()
    for tree, _ in {id(t): (t, h) for t, h in examples}.values():
        types.update(tree.types)
        for t, v in zip(tree.types, tree.values):
            if v is not None:
                subs.update(g.subtokens(t, v))
    return Vocab.build(types, subs, size)


def tiny_dataset(root: Path, vocab_size: int = 300) -> Path:
    """train/dev/test shards, vocab.json and grammar.json built from stdlib files."""
    root = Path(root)
    for split, names in (("train", TRAIN_MODULES), ("dev", DEV_MODULES), ("test", TEST_MODULES)):
        (root / split).mkdir(parents=True, exist_ok=True)
        dataset.write_shard(root / split / "shard-0000-test.npz", extract(names), g.PYTHON)
    dataset.build_vocab(root, vocab_size).save(root / "vocab.json")
    dataset.build_grammar_table(root).save(root / "grammar.json")
    return root


def encode_step_from_scratch(model, vocab: Vocab, sp):
    """One step's S_t and R_t (paths.step_paths) each encoded whole with SLM.encode, no caching:
    (top-layer states of the paths [P, d_lstm], top-layer state of the root path [1, d_lstm])."""
    import torch

    from anycode.model.features import MAX_VALUE_SUBTOKENS, value_ids

    P = len(sp.paths)
    L = max(len(nodes) for _, nodes in sp.paths)
    vals = torch.zeros(P, MAX_VALUE_SUBTOKENS, dtype=torch.long)
    ty = torch.zeros(P, L, dtype=torch.long)
    ix = torch.zeros(P, L, dtype=torch.long)
    ln = torch.zeros(P, dtype=torch.long)
    for k, (value, nodes) in enumerate(sp.paths):
        ids = value_ids(vocab, value)
        vals[k, : len(ids)] = torch.tensor(ids)
        ty[k, : len(nodes)] = torch.tensor([vocab.type_of(a) for a, _ in nodes])
        ix[k, : len(nodes)] = torch.tensor([i for _, i in nodes])
        ln[k] = len(nodes)
    hp, _ = model.encode(model.embed_value(vals), ty, ix, ln)
    rt = torch.tensor([[vocab.type_of(a) for a, _ in sp.root_path]])
    ri = torch.tensor([[i for _, i in sp.root_path]])
    hr, _ = model.encode(None, rt, ri, torch.tensor([len(sp.root_path)]))
    return hp[-1], hr[-1]


def tiny_corpus(root: Path) -> Path:
    """The files the tiny dataset's shards name (SPLIT/NAME.py), as the corpus holds them."""
    import shutil
    root = Path(root)
    for split, names in (("train", TRAIN_MODULES), ("dev", DEV_MODULES), ("test", TEST_MODULES)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for n in names:
            shutil.copy(module_file(n), root / split / f"{n}.py")
    return root


def s2s_train_args(packed: Path, out: Path, steps: int):
    """`anycode s2s train`'s arguments for the tiny preset on the CPU, `steps` steps, no dropout."""
    import argparse

    from anycode.model import fim_train
    from anycode.model.s2s_train import S2STask
    ap = argparse.ArgumentParser()
    fim_train.add_parser(ap, S2STask, "data/s2s")
    args = ap.parse_args(["--data", str(packed), "--out", str(out), "--config", "tiny", "--minutes", "5",
                          "--steps", str(steps), "--device", "cpu", "--set", "dropout=0"])
    args.overrides = fim_train.parse_overrides(args.overrides, fim_train.make_settings("tiny", {}, S2STask))
    return args
