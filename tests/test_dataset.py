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
            p.write_bytes(source_for(p.stem))
    return tmp_path / "corpus"


def source_for(stem: str) -> bytes:
    """SOURCE with names of its own: no function duplicates another file's (train drops those of dev and test)."""
    return SOURCE.replace(b"area", f"area_{stem}".encode()).replace(b"height", f"height_{stem}".encode()) \
        .replace(b"factor", f"factor_{stem}".encode())


def build(tmp_path, *more):
    import argparse

    from anycode.model import dataset_cli
    ap = argparse.ArgumentParser()
    dataset_cli.add_parser(ap)
    args = ap.parse_args(["build", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / "ds"), "--jobs", "1",
                          *more])
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


def test_a_longer_function_limit_rebuilds_the_shards_with_the_long_functions(tmp_path):
    """`--max-function-lines` lets holes come from longer functions: a shard built with another
    limit is rebuilt, not reused, and summary.json keeps the figures of the splits not rebuilt."""
    make_corpus(tmp_path)
    body = "".join(f"    v{i} = scale(width, {i}) + offset\n" for i in range(30))
    long_fn = f"def long_one(width, offset):\n{body}    return v0 * v29\n".encode()
    (tmp_path / "corpus" / "test" / "c" / "four.py").write_bytes(source_for("four") + b"\n\n" + long_fn)
    out = build(tmp_path)
    short = json.loads((out / "summary.json").read_text())
    assert short["test"]["skipped"].get("long function") == 1 and short["test"]["max_function_lines"] == 20
    shard = dataset.shard_paths(out, "test")[0]
    build(tmp_path, "--splits", "test", "--max-function-lines", "40")
    longer = json.loads((out / "summary.json").read_text())
    assert "long function" not in longer["test"]["skipped"] and longer["test"]["max_function_lines"] == 40
    assert longer["test"]["examples"] > short["test"]["examples"]
    assert longer["train"] == short["train"] and longer["dev"] == short["dev"]     # not built this time: kept
    assert dataset.shard_paths(out, "test")[0] == shard
    assert json.loads(shard.with_suffix(".json").read_text())["max_function_lines"] == 40
    rebuilt = dataset.Shard(shard)
    sources = {rebuilt.source_of(int(f)) for f in rebuilt.arrays["e_func"]}
    assert {name for name, _ in sources} == {"c/four.py"}
    lines = {line for _, line in sources}
    text = (tmp_path / "corpus" / "test" / "c" / "four.py").read_bytes()
    assert text[: text.index(b"def long_one")].count(b"\n") + 1 in lines and len(lines) == 3   # the two short ones too


def test_shards_of_a_changed_corpus_replace_the_old_ones(tmp_path):
    corpus = make_corpus(tmp_path)
    out = build(tmp_path)
    old = dataset.shard_paths(out, "train")
    (corpus / "train" / "a" / "three.py").write_bytes(source_for("three_train"))
    build(tmp_path)
    new = dataset.shard_paths(out, "train")
    assert len(new) == 1 and new != old and not old[0].exists()
    assert not old[0].with_suffix(".json").exists()
    assert dataset.Shard(new[0]).meta["files"] == ["a/one.py", "a/three.py", "a/two.py"]


# ---------------------------------------------------------------- train functions that duplicate dev or test ones

HELD_OUT_FN = b'''\
def top_items(items, key, limit=10):
    """The largest items."""
    ranked = sorted(items, key=key, reverse=True)
    return ranked[:limit] if limit else ranked
'''
# the same function reformatted, with a comment and without its docstring: a near duplicate
NEAR_COPY = b'''\
def top_items(items, key, limit = 10):
    # sort, largest first
    ranked = sorted(items,
                    key=key, reverse=True)
    return ranked[ : limit] if limit else ranked
'''
# one identifier, the name, or one literal apart: other functions, kept
OTHER_NAME = HELD_OUT_FN.replace(b"ranked", b"ordered")
RENAMED = HELD_OUT_FN.replace(b"top_items", b"best")
OTHER_LITERAL = HELD_OUT_FN.replace(b"limit=10", b"limit=20")


def keys_of(source: bytes) -> list[int]:
    tree = g.parse(source)
    return [dataset.function_key(n, g.PYTHON) for n in tree.root_node.children if n.type == "function_definition"]


def test_function_key_ignores_layout_comments_and_docstring():
    (held,) = keys_of(HELD_OUT_FN)
    assert keys_of(NEAR_COPY) == [held]
    assert keys_of(OTHER_NAME) != [held] and keys_of(OTHER_LITERAL) != [held] and keys_of(RENAMED) != [held]
    # generic one-liners of other names are not copies of each other
    assert keys_of(b"def kind(self):\n    return self._x\n") != keys_of(b"def size(self):\n    return self._x\n")
    # string literals count whole, escapes and all
    assert keys_of(b'def f():\n    return "a\\nb"\n') != keys_of(b'def f():\n    return "c\\nd"\n')
    # a nested function has its own key, and the outer one includes it
    nested = keys_of(b"def outer(items, key):\n" + b"".join(b"    " + l + b"\n" for l in HELD_OUT_FN.splitlines()))
    assert len(nested) == 1 and nested != [held]


def dedup_corpus(tmp_path):
    root = tmp_path / "corpus"
    files = {
        "dev/held/lib.py": HELD_OUT_FN + b"\n\n" + source_for("dev"),
        "test/other/mod.py": source_for("other"),
        "train/copier/a.py": NEAR_COPY + b"\n\n" + OTHER_NAME.replace(b"top_items", b"top_a") + b"\n\n" + RENAMED,
        "train/copier/b.py": OTHER_LITERAL + b"\n\n" + source_for("other"),   # a copy of a test file
        "train/mine/c.py": source_for("train"),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def build_args(tmp_path, *extra, out="ds"):
    import argparse

    from anycode.model import dataset_cli
    ap = argparse.ArgumentParser()
    dataset_cli.add_parser(ap)
    return dataset_cli, ap.parse_args(["build", "--corpus", str(tmp_path / "corpus"), "--out", str(tmp_path / out),
                                       "--jobs", "1", *extra])


def function_names(out, split):
    names = []
    for p in dataset.shard_paths(out, split):
        shard = dataset.Shard(p)
        for f in range(shard.num_functions):
            tree = shard.tree(f)
            names.append(next(v for t, v in zip(tree.types, tree.values) if v is not None))
    return names


def test_train_functions_that_duplicate_dev_or_test_ones_are_dropped(tmp_path):
    dedup_corpus(tmp_path)
    cli, args = build_args(tmp_path)
    assert cli.run(args) == 0
    out = tmp_path / "ds"
    summary = json.loads((out / "summary.json").read_text())
    # the near copy of the dev function and both functions copied from the test file are dropped
    dropped = summary["train"]["held_out_duplicates"]
    assert dropped["functions"] == 3
    assert summary["train"]["skipped"][dataset.HELD_OUT_DUPLICATE] == 3
    assert dropped["examples"] > 0
    train = function_names(out, "train")
    assert train.count("top_items") == 1 and "top_a" in train and "best" in train   # OTHER_LITERAL and RENAMED kept
    assert "area_other" not in train and "scale" in train                    # c.py's own scale differs by a name
    # dev and test are built as before
    cli, args = build_args(tmp_path, "--keep-held-out-duplicates", out="ds-all")
    assert cli.run(args) == 0
    kept = json.loads((tmp_path / "ds-all" / "summary.json").read_text())
    assert kept["dev"] == summary["dev"] and kept["test"] == summary["test"]
    assert kept["train"]["functions"] == summary["train"]["functions"] + 3
    assert kept["train"]["examples"] == summary["train"]["examples"] + dropped["examples"]
    assert function_names(tmp_path / "ds-all", "train").count("top_items") == 2


def test_train_shards_follow_a_changed_held_out_split(tmp_path):
    corpus = dedup_corpus(tmp_path)
    cli, args = build_args(tmp_path)
    assert cli.run(args) == 0
    out = tmp_path / "ds"
    shard = dataset.shard_paths(out, "train")[0]
    before = dataset.Shard(shard).meta["dedup"]
    (corpus / "dev/held/lib.py").write_bytes(source_for("dev"))   # the dev function is gone
    assert cli.run(args) == 0
    meta = dataset.Shard(shard).meta
    assert meta["dedup"] != before
    assert function_names(out, "train").count("top_items") == 2
    assert json.loads((out / "summary.json").read_text())["train"]["held_out_duplicates"]["functions"] == 2


def test_train_drops_copies_of_another_held_out_corpus(tmp_path):
    """`--held-out-also`: a second held-out list (the script-like projects) fetched into its own
    corpus; train functions that copy its test functions are dropped too, and the train shards built
    without it are rebuilt against the larger held-out set."""
    dedup_corpus(tmp_path)
    cli, args = build_args(tmp_path)
    assert cli.run(args) == 0
    before = json.loads((tmp_path / "ds" / "summary.json").read_text())["train"]
    assert "area_train" in function_names(tmp_path / "ds", "train")
    extra = tmp_path / "scripts"
    (extra / "test" / "script").mkdir(parents=True)
    (extra / "test" / "script" / "run.py").write_bytes(source_for("train"))   # what train's c.py holds
    cli, args = build_args(tmp_path, "--held-out-also", str(extra))
    assert cli.run(args) == 0
    after = json.loads((tmp_path / "ds" / "summary.json").read_text())["train"]
    assert after["held_out_duplicates"]["functions"] > before["held_out_duplicates"]["functions"]
    assert after["functions"] == before["functions"] - (after["held_out_duplicates"]["functions"]
                                                        - before["held_out_duplicates"]["functions"])
    assert "area_train" not in function_names(tmp_path / "ds", "train")


# ---------------------------------------------------------------- a build that was killed, or a broken shard

def many_files_corpus(tmp_path, count=24):
    for i in range(count):
        split = "train" if i >= 4 else ("dev" if i < 2 else "test")
        p = tmp_path / "corpus" / split / "p" / f"m{i:02d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(source_for(f"m{i:02d}"))


def shard_state(out):
    return {p.name: os.stat(p).st_mtime_ns for p in sorted((out / "train").glob("shard-*"))}


def test_a_killed_build_continues_where_it_stopped(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    many_files_corpus(tmp_path, 60)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "anycode", "dataset", "build", "--corpus", str(tmp_path / "corpus"), "--out", str(out),
           "--jobs", "1", "--files-per-shard", "1", "--splits", "train"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "train").glob("shard-*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.with_suffix(".npz").name for p in (out / "train").glob("shard-*.json")}
    assert 3 <= len(finished) < 56, "the build should have been killed half-way"
    before = shard_state(out)

    cli, args = build_args(tmp_path, "--files-per-shard", "1", "--splits", "train")
    assert cli.run(args) == 0
    after = shard_state(out)
    assert all(after[n] == before[n] for n in finished)   # every finished shard is reused as it was
    assert len(dataset.shard_paths(out, "train")) == 56
    assert not list((out / "train").glob("*.tmp*"))
    # and the result is the one a build that was never killed gives
    cli, args = build_args(tmp_path, "--files-per-shard", "1", "--splits", "train", out="fresh")
    assert cli.run(args) == 0
    for a, b in zip(dataset.shard_paths(out, "train"), dataset.shard_paths(tmp_path / "fresh", "train")):
        assert a.name == b.name
        assert json.loads(a.with_suffix(".json").read_text()) == json.loads(b.with_suffix(".json").read_text())


def test_unfinished_shards_are_rebuilt_and_finished_ones_reused(tmp_path):
    many_files_corpus(tmp_path, 14)   # 10 train files: 5 shards
    cli, args = build_args(tmp_path, "--files-per-shard", "2", "--splits", "train")
    assert cli.run(args) == 0
    out = tmp_path / "ds"
    shards = dataset.shard_paths(out, "train")
    # what a kill leaves: a shard whose .json was not written yet, and a half-written temporary file
    shards[1].with_suffix(".json").unlink()
    (out / "train" / (shards[2].stem + ".tmp.npz")).write_bytes(b"PK\x03\x04 half")
    shards[2].with_suffix(".json").unlink()
    shards[2].unlink()
    before = shard_state(out)
    assert cli.run(args) == 0
    after = shard_state(out)
    assert after[shards[0].name] == before[shards[0].name] and after[shards[3].name] == before[shards[3].name]
    assert shards[1].name in after and shards[2].name in after and shards[2].with_suffix(".json").exists()
    assert not list((out / "train").glob("*.tmp*"))
    assert sum(len(dataset.Shard(p)) for p in shards) > 0


@pytest.mark.parametrize("damage", ["truncate", "flip", "json"])
def test_a_corrupt_shard_stops_the_build_naming_the_file(tmp_path, capsys, damage):
    many_files_corpus(tmp_path, 10)
    cli, args = build_args(tmp_path, "--files-per-shard", "2", "--splits", "train")
    assert cli.run(args) == 0
    shard = dataset.shard_paths(tmp_path / "ds", "train")[2]
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
        named = shard
    elif damage == "flip":   # one byte inside the compressed arrays
        i = len(data) // 3
        shard.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        named = shard
    else:
        named = shard.with_suffix(".json")
        named.write_text(named.read_text()[:100])
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert str(named) in err and "anycode dataset build" in err


def _boom(x):
    if x == 3:
        raise ValueError("three")
    return x * 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_worker_pools_give_results_in_order_and_hand_back_errors(jobs):
    from anycode.model.workers import process_pool
    with process_pool(jobs) as pool:
        assert list(pool.map(_boom, [0, 1, 2])) == [0, 2, 4]
        future = pool.submit(_boom, 3)
        with pytest.raises(ValueError, match="three"):
            future.result()
