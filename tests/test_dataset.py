"""Example extraction (paper section 4.1), bad input, and shards that training reads back."""
import json
import os

import pytest

from anycode.grammars import python as g
from anycode.model import dataset
from anycode.model.grammar_table import GrammarTable
from anycode.model.paths import FlatTree
from anycode.model.vocab import Vocab

SOURCE = b'''\
def area(width, height):
    if width > 0 and height > 0:
        return width * height
    return 0


def scale(values, factor):
    result = [v * factor for v in values]
    total = sum(result)
    return result, total
'''


def targets_of(tmp_path, source: bytes, name="mod.py"):
    path = tmp_path / name
    path.write_bytes(source)
    res = dataset.extract_file(str(path), name=name, lang=g.PYTHON)
    out = []
    for flat, holes, _ in res.functions:
        src = path.read_bytes()
        out += [src[flat.start_byte[h]: flat.end_byte[h]].decode() for h in holes]
    return out, res.skipped


def test_targets_follow_the_paper_protocol(tmp_path):
    targets, _ = targets_of(tmp_path, SOURCE)
    assert "width > 0 and height > 0" in targets
    assert "width * height" in targets
    assert "[v * factor for v in values]" in targets
    assert "sum(result)" in targets
    # single nodes are not targets; neither are whole statements nor assignment targets
    assert "width" not in targets and "0" not in targets
    assert "result, total" not in targets  # an expression_list, not one of the expression types


def test_targets_that_appear_as_is_elsewhere_are_dropped(tmp_path):
    src = b"def f(a):\n    x = a.b + 1\n    return a.b + 1\n"
    targets, _ = targets_of(tmp_path, src)
    assert "a.b + 1" not in targets


def test_long_and_test_functions_are_skipped(tmp_path):
    long_body = "\n".join(f"    x{i} = f(x{i - 1})" for i in range(1, 25))
    src = f"def long(x0):\n{long_body}\n\ndef test_thing(a):\n    return a.b(1)\n".encode()
    targets, skipped = targets_of(tmp_path, src)
    assert targets == []
    assert skipped["long function"] == 1 and skipped["test function"] == 1


@pytest.mark.parametrize("content,reason", [
    (b"\x00\x01binary", "binary file"),
    ("def f():\n    return 'caf\u00e9'\n".encode("latin-1"), "not utf-8"),
    (b"def f(:\n  return (\n", "does not parse"),
])
def test_bad_files_are_counted_and_skipped(tmp_path, content, reason):
    targets, skipped = targets_of(tmp_path, content)
    assert targets == [] and skipped[reason] == 1


def test_huge_and_test_files_are_skipped(tmp_path):
    _, skipped = targets_of(tmp_path, b"x = 1\n" * 200_000)
    assert skipped["huge file"] == 1
    _, skipped = targets_of(tmp_path, SOURCE, name="tests_helpers.py")
    assert skipped["test file"] == 1


def test_empty_functions_give_no_examples(tmp_path):
    targets, skipped = targets_of(tmp_path, b"def f():\n    pass\n")
    assert targets == [] and skipped["function without targets"] == 1


def make_corpus(tmp_path):
    for split, files in {"train": ["a/one.py", "a/two.py"], "dev": ["b/three.py"], "test": ["c/four.py"]}.items():
        for f in files:
            p = tmp_path / "corpus" / split / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(SOURCE.replace(b"area", f"area_{p.stem}".encode()))
    return tmp_path / "corpus"


def build(tmp_path):
    import argparse

    from anycode.model import dataset_cli
    ap = argparse.ArgumentParser()
    dataset_cli.add_parser(ap)
    args = ap.parse_args(["build", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "ds"), "--jobs", "1"])
    assert dataset_cli.run(args) == 0
    return tmp_path / "ds"


def test_shards_read_back_the_same_trees(tmp_path):
    make_corpus(tmp_path)
    out = build(tmp_path)
    shard = dataset.Shard(dataset.shard_paths(out, "train")[0])
    assert len(shard) > 0
    name, line = shard.source_of(int(shard.arrays["e_func"][0]))
    source = (tmp_path / "corpus" / "train" / name).read_bytes()
    fn = next(n for n in g.parse(source).root_node.children if n.start_point[0] + 1 == line)
    expected = FlatTree.from_node(g.convert(fn), g.PYTHON)
    tree, hole = shard.example(0)
    assert tree.types == expected.types and tree.values == expected.values
    assert tree.parent == expected.parent and tree.end == expected.end
    assert g.base_type(tree.types[hole]) in g.EXPRESSION_TYPES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["files"] == 2 and summary["test"]["files"] == 1
    vocab = Vocab.load(out / "vocab.json")
    assert "width" in vocab.subtokens and "binary_operator:*" in vocab.node_types
    table = GrammarTable.load(out / "grammar.json")
    assert "binary_operator:*" in table.allowed_children("return_statement", 0)
    assert table.eos_allowed("argument_list", 1)


def test_a_second_build_reuses_finished_shards(tmp_path):
    make_corpus(tmp_path)
    out = build(tmp_path)
    shard = dataset.shard_paths(out, "train")[0]
    before = os.stat(shard).st_mtime_ns
    build(tmp_path)
    assert os.stat(shard).st_mtime_ns == before


def test_shards_of_a_changed_corpus_replace_the_old_ones(tmp_path):
    corpus = make_corpus(tmp_path)
    out = build(tmp_path)
    old = dataset.shard_paths(out, "train")
    (corpus / "train" / "a" / "three.py").write_bytes(SOURCE.replace(b"area", b"area_three"))
    build(tmp_path)
    new = dataset.shard_paths(out, "train")
    assert len(new) == 1 and new != old and not old[0].exists()
    assert not old[0].with_suffix(".json").exists()
    assert dataset.Shard(new[0]).meta["files"] == ["a/one.py", "a/three.py", "a/two.py"]
