"""Code search (issue 23): pairs from a corpus, packing, the metrics, and the encoders trained on CPU."""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest

from anycode import grammars
from anycode.model import search_data as sd
from anycode.model import search_eval, search_pack

TOPICS = [("read", "file", "path"), ("parse", "json", "text"), ("sort", "list", "items"),
          ("send", "request", "url"), ("compute", "mean", "values"), ("open", "socket", "port"),
          ("write", "csv", "rows"), ("resize", "image", "size")]


def function_source(verb: str, noun: str, arg: str, k: int) -> str:
    return (f"def {verb}_{noun}_{k}({arg}, option=None):\n"
            f'    """{verb.capitalize()} the {noun} given by {arg} number {k}.\n\n'
            f"    More words that are not the query.\n"
            f'    """\n'
            f"    {noun}_value = load_{noun}({arg})\n"
            f"    if option is not None:\n"
            f"        {noun}_value = {verb}({noun}_value, option, {k})\n"
            f"    return {noun}_value\n")


def make_corpus(root: Path, per_split: dict[str, int]) -> Path:
    """A corpus folder as `anycode corpus fetch` lays it out, one project per split."""
    corpus = root / "corpus"
    projects = {}
    rnd = random.Random(0)
    for split, n in per_split.items():
        name = f"proj_{split}"
        projects[name] = {"split": split}
        folder = corpus / split / name
        folder.mkdir(parents=True)
        for f in range(max(1, n // 10)):
            body = []
            for k in range(f * 10, min(n, f * 10 + 10)):
                verb, noun, arg = rnd.choice(TOPICS)
                body.append(function_source(verb, noun, arg, k + 1000 * list(per_split).index(split)))
            (folder / f"mod{f}.py").write_text("\n\n".join(body))
    (corpus / "manifest.json").write_text(json.dumps({"projects": projects}))
    return corpus


# ---------------------------------------------------------------- pairs


PY = grammars.get("python")


def parse_function(src: str):
    root = PY.parse(src.encode()).root_node
    return src.encode(), [n for n in root.named_children if n.type == "function_definition"][0]


def test_pair_is_first_paragraph_and_code_without_docstring():
    src = function_source("read", "file", "path", 7)
    source, fn = parse_function(src)
    pair = sd.function_pair(source, fn, PY.docstring(fn), "m.py", PY, __import__("collections").Counter())
    assert pair["query"] == "Read the file given by path number 7."
    assert '"""' not in pair["code"] and "More words" not in pair["code"]
    assert pair["code"].startswith("def read_file_7(path, option=None):\n    file_value = load_file(path)")
    assert pair["f_query"][:3] == ["read", "the", "file"]
    assert pair["f_code"][:4] == ["read", "file", "7", "path"]
    for start, path, end in pair["f_ctx"]:
        nodes = path.split(" ")
        assert len(nodes) <= sd.MAX_PATH_NODES and sum(t.startswith("^") for t in nodes) == 1
        assert start and end
    assert 0 < len(pair["f_ctx"]) <= sd.MAX_CONTEXTS


@pytest.mark.parametrize("src, reason", [
    ('def test_it(x):\n    """Check that it works well."""\n    a = x\n    b = a\n    return b\n', "test or dunder"),
    ('def __str__(self):\n    """The string of this thing."""\n    a = 1\n    b = a\n    return b\n', "test or dunder"),
    ('def f(x):\n    """Add one to x."""\n    return x + 1\n', "short function"),
    ('def f(x):\n    """Add."""\n    a = x\n    b = a\n    return b\n', "short query"),
])
def test_pair_filters(src, reason, tmp_path):
    (tmp_path / "m.py").write_text(src)
    pairs, skipped = sd.file_pairs(tmp_path / "m.py", "m.py", PY)
    assert pairs == [] and skipped[reason] == 1


def test_methods_get_qualified_names(tmp_path):
    body = function_source("sort", "list", "items", 1).replace("\n", "\n    ")
    (tmp_path / "m.py").write_text("class Sorter:\n    " + body)
    pairs, _ = sd.file_pairs(tmp_path / "m.py", "m.py", PY)
    assert [(p["name"], p["line"]) for p in pairs] == [("Sorter.sort_list_1", 2)]
    assert pairs[0]["code"].startswith("def sort_list_1(items")


def test_build_dedups_across_splits_and_round_trips(tmp_path):
    corpus = make_corpus(tmp_path, {"train": 30, "dev": 10, "test": 10})
    dup = function_source("read", "file", "path", 999)
    (corpus / "dev" / "proj_dev" / "dup.py").write_text(dup)
    (corpus / "train" / "proj_train" / "dup.py").write_text(dup)
    out = tmp_path / "search"
    assert sd.run(argparse.Namespace(action="build", corpus=corpus, out=out, jobs=1, lang="python")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["pairs"] == 31 and summary["dev"]["pairs"] == 10
    assert summary["dev"]["skipped"]["duplicate"] == 1
    pairs = list(sd.read_pairs(out, "dev"))
    feats = sd.SplitFeatures(out / "dev.feat.npz")
    assert len(pairs) == len(feats) == 10
    assert feats.tokens("query", 3) == sd.words(pairs[3]["query"])
    assert all(p["project"] == "proj_dev" for p in pairs)


# ---------------------------------------------------------------- packing


def test_flattened_cosqa_function_parses_once_restored():
    flat = ('def get_file_string(filepath):     """Get string from file."""     with open(filepath) as f:'
            '         return f.read()')
    assert PY.parse(flat.encode()).root_node.has_error
    feats = sd.source_features(search_pack.restore_newlines(flat), PY)
    assert feats is not None and feats.code[:3] == ["get", "file", "string"] and feats.contexts


def packed(tmp_path: Path) -> Path:
    corpus = make_corpus(tmp_path, {"train": 200, "dev": 40, "test": 40})
    assert sd.run(argparse.Namespace(action="build", corpus=corpus, out=tmp_path / "search", jobs=1, lang="python")) == 0
    cosqa = tmp_path / "cosqa"
    cosqa.mkdir()
    recs = [{"idx": f"d{i}", "doc": f"{v} {n}", "code": function_source(v, n, a, i), "label": i % 2}
            for i, (v, n, a) in enumerate(TOPICS * 3)]
    (cosqa / "cosqa-dev.json").write_text(json.dumps(recs))
    test = [{"idx": f"webquery-test-{i + 1}", "doc": r["doc"], "code": r["code"].replace("\n", " ")} for i, r in enumerate(recs)]
    (cosqa / "test_webquery.json").write_text(json.dumps(test))
    (cosqa / "webquery_answers.txt").write_text("webquery-test-1\t1\nwebquery-test-2\t0\n")
    args = argparse.Namespace(data=tmp_path / "search", out=tmp_path / "packed", cosqa=cosqa,
                              subtokens=500, paths=500, ends=500)
    assert search_pack.run(args) == 0
    return tmp_path / "packed"


def test_pack_arrays(tmp_path):
    out = packed(tmp_path)
    vocab = search_pack.load_vocab(out)
    train = search_pack.load_arrays(out / "train.npz.xz")
    assert train["query"].shape == (200, search_pack.MAX_QUERY)
    assert train["ctx"].shape == (200, search_pack.MAX_CONTEXTS, 3)
    assert (train["ctx"][:, 0, 1] >= 2).all()          # every function has a known first path
    tables = search_pack.load_arrays(out / "tables.npz.xz")
    assert tables["path_types"].shape == (len(vocab["paths"]), search_pack.MAX_PATH_NODES)
    assert set(np.unique(tables["path_dirs"][2:])) <= {0, 1, 2, 3}
    assert ((tables["path_dirs"][2:] == 2).sum(1) == 1).all()
    test = search_pack.load_arrays(out / "cosqa_test.npz.xz")
    assert list(test["label"][:3]) == [1, 0, -1]
    assert test["code_id"].max() + 1 == len(set(r["code"] for r in json.loads((tmp_path / "cosqa/test_webquery.json").read_text())))
    assert json.loads((out / "summary.json").read_text())["cosqa_test"]["parsed"] == 24


# ---------------------------------------------------------------- metrics


def test_ranks_count_ties_against():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 3.0], [5.0, 0.0, 4.0]])
    assert list(search_eval.ranks(scores, np.array([0, 1, 2]))) == [2, 2, 2]
    got = search_eval.csn_mrr(3, lambda idx: np.eye(len(idx)))
    assert got["mrr"] == 1.0 and got["queries"] == 3
    chunks = search_eval.csn_chunks(2500, seed=0)
    assert [len(c) for c in chunks] == [1000, 1000] and len(np.unique(np.concatenate(chunks))) == 2000


def test_threshold_and_cross_validated_accuracy():
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 1.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert search_eval.best_threshold(scores, labels) == pytest.approx(0.55)
    assert search_eval.cross_validated_accuracy(scores, labels, folds=3) == 1.0
    assert search_eval.accuracy(scores, 1 - labels, 0.8) == 0.0


# ---------------------------------------------------------------- encoders


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    return packed(tmp_path_factory.mktemp("search"))


@pytest.mark.parametrize("fusion", ["concat", "sum", "attention", "structural", "semantic"])
def test_each_fusion_encodes_and_backpropagates(packed_dir, fusion):
    import torch
    from anycode.model import search_train as st

    data = st.load_packed(packed_dir)
    cfg, _ = st.make_config(data, "tiny", fusion, {})
    model = st.SearchModel(cfg, {k: torch.from_numpy(v) for k, v in data["tables"].items()})
    batch = st.tensors({k: v[:8] for k, v in data["train"].items()}, "cpu")
    loss = model(batch["query"], batch["code"], batch["ctx"])
    loss.backward()
    assert torch.isfinite(loss)
    width = 2 * cfg.d if fusion == "concat" else cfg.d
    assert model.encode_code(batch["code"], batch["ctx"]).shape == (8, width)
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("query.") for n in grads)
    assert any(n.startswith("structural.") for n in grads) == (fusion != "semantic")
    assert any(n.startswith("semantic.") for n in grads) == (fusion != "structural")
    # an empty function (no subtokens, no contexts) still gets a finite vector
    empty = model.encode_code(torch.zeros_like(batch["code"][:1]), torch.zeros_like(batch["ctx"][:1]))
    assert torch.isfinite(empty).all()


def test_training_learns_resumes_and_exports(packed_dir, tmp_path):
    from anycode.model import search_train as st

    run, export = tmp_path / "run", tmp_path / "export"
    # dev checked every second: on 200 pairs the tiny model peaks early, then learns the functions' numbers
    # by heart and falls back towards chance on dev; a slow machine must still see the peak
    args = ["--data", str(packed_dir), "--out", str(run), "--variants", "concat", "--config", "tiny",
            "--device", "cpu", "--export", str(export), "--set", "eval_every=1"]
    assert st.main(args + ["--minutes", "0.6"]) == 0
    state = __import__("torch").load(run / "concat" / "ckpt.pt", weights_only=False)["state"]
    first_steps = state["step"]
    assert first_steps > 20
    history = state["history"]
    chance = float(np.mean(1.0 / np.arange(1, 41)))          # 40 dev pairs in one chunk
    assert max(m for _, _, m in history) > 2 * chance
    res = json.loads((export / "search_eval.json").read_text())
    assert res["best"] == "concat"
    res = res["concat"]
    assert res["dev_csn"]["queries"] == 40 and res["test_csn"]["mrr"] > chance
    assert res["cosqa"]["test_accuracy_labelled"]["pairs"] == 2
    with pytest.raises(ValueError, match="no tables"):
        st.load_model(export / "search_best.pt")
    model = st.load_model(export / "search_best.pt", packed=packed_dir)
    assert model.cfg.fusion == "concat" and model.emb.weight.data_ptr() == model.query.emb.weight.data_ptr()
    assert st.main(args + ["--minutes", "0.3"]) == 0          # resumes: more steps on the same run
    state = __import__("torch").load(run / "concat" / "ckpt.pt", weights_only=False)["state"]
    assert state["step"] > first_steps and state["planned_s"] < 40


# ---------------------------------------------------------------- BM25


def test_bm25_ranks_word_overlap_first():
    pytest.importorskip("bm25s", reason="the train extra (bm25s) is not installed")
    from anycode.model.search_bm25 import score_matrix

    docs = [sd.words("def sort_list(items): return sorted(items)"),
            sd.words("def read_file(path): return open(path).read()"), []]
    s = score_matrix([sd.words("read a file"), [], sd.words("zebra")], docs)
    assert s.shape == (3, 3) and s[0].argmax() == 1 and s[0, 0] == 0
    assert (s[1] == 0).all() and (s[2] == 0).all()


def test_bm25_report_on_built_pairs(packed_dir):
    pytest.importorskip("bm25s", reason="the train extra (bm25s) is not installed")
    from anycode.model import search_bm25

    search = packed_dir.parent / "search"
    got = search_bm25.csn_test(search, "test")
    assert got["queries"] == 40 and got["mrr"] > 2 * float(np.mean(1.0 / np.arange(1, 41)))
    scores, code_id, labels = search_bm25.cosqa_set(packed_dir.parent / "cosqa" / "test_webquery.json")
    assert scores.shape == (24, 24) and list(labels[:3]) == [1, 0, -1]


def test_training_side_needs_no_tree_sitter():
    """tools/device/train_search.sh runs where tree-sitter is not installed."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['tree_sitter'] = None\n"
            "import anycode.model.search_train, anycode.model.search_eval, anycode.model.search_pack\n"
            "assert 'anycode.grammars.python' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- anycode search (BM25)


def run_search(args: list[str], cwd: Path, cache: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "anycode", "search", *args, "--cache", str(cache)],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def test_search_cli_indexes_queries_and_follows_edits(tmp_path):
    pytest.importorskip("bm25s", reason="the search extra (bm25s) is not installed")
    proj, cache = tmp_path / "proj", tmp_path / "cache"
    (proj / "pkg").mkdir(parents=True)
    (proj / "pkg" / "io.py").write_text(function_source("read", "file", "path", 1) + "\n\n"
                                        + function_source("write", "csv", "rows", 2))
    (proj / "pkg" / "net.py").write_text("class Client:\n    " + function_source("send", "request", "url", 3).replace("\n", "\n    "))
    (proj / "broken.py").write_text("def f(:\n")
    (proj / "blob.py").write_bytes(b"\0\1\2")
    r = run_search(["--bm25", "send a request to a url", "."], proj, cache)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("pkg/net.py:2: Client.send_request_3 ") and float(lines[0].split()[-1]) > 0
    assert "skipped" in r.stderr and "broken.py: does not parse" in r.stderr and "blob.py: binary" in r.stderr
    assert "bm25 over 3 functions of 4 files (4 re-read)" in r.stderr
    r = run_search(["--bm25", "write csv rows", ".", "-n", "1"], proj, cache)
    assert r.stdout.splitlines() == [r.stdout.splitlines()[0]] and "pkg/io.py:" in r.stdout and "(0 re-read)" in r.stderr
    (proj / "pkg" / "io.py").write_text(function_source("resize", "image", "size", 9))
    r = run_search(["--bm25", "write csv rows", "."], proj, cache)
    assert "(1 re-read)" in r.stderr and "write_csv" not in r.stdout
    assert run_search(["--bm25", "", "."], proj, cache).stdout == ""
    for index in cache.glob("index-*.json.gz"):
        index.write_bytes(b"not gzip")
    r = run_search(["--bm25", "resize image", "."], proj, cache)
    assert r.returncode == 0 and "rebuilt" in r.stderr and "resize_image_9" in r.stdout


# ---------------------------------------------------------------- export and runtime


def test_exported_encoders_match_torch_and_featurize_source_as_training_did(packed_dir, tmp_path):
    """ONNX Runtime's vectors equal torch's (the same half-precision weights) for packed rows, and the
    runtime's own featurization of a function's source gives the packed row's vector."""
    import torch
    from anycode.model import search_train as st
    from anycode.model.search_export import export
    from anycode.model.search_runtime import SearchEncoders

    data = st.load_packed(packed_dir)
    cfg, _ = st.make_config(data, "tiny", "attention", {})
    torch.manual_seed(1)
    model = st.SearchModel(cfg, {k: torch.from_numpy(v) for k, v in data["tables"].items()})
    st.save_best(tmp_path / "w.pt", model, data["tables"], {"step": 0, "dev_mrr": 0.0})
    out = export(tmp_path / "w.pt", packed_dir, tmp_path / "onnx")
    enc = SearchEncoders(out)
    ref = st.load_model(tmp_path / "w.pt")
    dev = st.tensors({k: v[:5] for k, v in data["dev"].items()}, "cpu")
    with torch.no_grad():
        want_q = ref.encode_query(dev["query"]).numpy()
        want_c = ref.encode_code(dev["code"], dev["ctx"]).numpy()
    pairs = list(sd.read_pairs(packed_dir.parent / "search", "dev"))[:5]
    got_q = enc.queries([p["query"] for p in pairs])
    got_c = enc.functions([sd.source_features(p["code"], PY) for p in pairs])
    assert got_q.shape == want_q.shape == (5, cfg.d)
    np.testing.assert_allclose(got_q, want_q, atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(got_c, want_c, atol=1e-4, rtol=1e-3)
    assert enc.queries([]).shape == (0, cfg.d)
    assert json.loads((out / "config.json").read_text())["fusion"] == "attention"

    # `anycode search --model`: every function, ranked by the inner product of the runtime's vectors
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "m.py").write_text("\n\n".join(p["code"] for p in pairs))
    r = run_search(["read the file", ".", "--model", str(out), "-n", "3"], proj, tmp_path / "cache")
    assert r.returncode == 0 and "# encoders" in r.stderr, r.stderr
    feats = [sd.source_features(p["code"], PY) for p in pairs]
    from anycode.model import search_index as si
    rows, scales = si.unpack_vectors([si.pack_vector(v) for v in enc.functions(feats)])
    scores = si.vector_scores(rows, scales, enc.queries(["read the file"])[0])
    want = [f"m.py:{1 + sum(p['code'].count(chr(10)) + 2 for p in pairs[:i])}: {pairs[i]['name'].split('.')[-1]} "
            f"{scores[i]:.2f}" for i in np.argsort(-scores)[:3]]
    assert r.stdout.splitlines() == want

    # with a BM25 weight in the encoders' config both rank (standardized sums); a weight this large
    # leaves BM25's order, which --bm25 gives alone
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "bm25_weight": 1000.0}))
    pytest.importorskip("bm25s", reason="the search extra (bm25s) is not installed")
    query = pairs[3]["query"]
    alone = run_search(["--bm25", query, ".", "-n", "1"], proj, tmp_path / "cache")
    both = run_search([query, ".", "--model", str(out), "-n", "2"], proj, tmp_path / "cache")
    assert both.returncode == 0 and "# encoders+bm25" in both.stderr, both.stderr
    assert both.stdout.split()[:2] == alone.stdout.split()[:2]       # the same first function


def test_search_runtime_and_command_need_no_torch():
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "import anycode.model.search_runtime, anycode.model.search_index, anycode.model.search_data\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_failing_variant_leaves_the_others_their_run(packed_dir, tmp_path):
    from anycode.model import search_train as st

    code = st.main(["--data", str(packed_dir), "--out", str(tmp_path / "run"), "--variants", "nosuch,semantic",
                    "--config", "tiny", "--device", "cpu", "--export", str(tmp_path / "x"), "--minutes", "0.2"])
    res = json.loads((tmp_path / "x" / "search_eval.json").read_text())
    assert code == 1 and "fusion must be one of" in res["nosuch"]["error"]
    assert res["semantic"]["test_csn"]["queries"] == 40 and res["best"] == "semantic"
    assert (tmp_path / "x" / "search_best.pt").exists()


def test_table_rows_from_search_eval():
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_table", Path(__file__).parent.parent / "tools/search_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.rows({"sum": {"step": 700, "dev_csn": {"mrr": 0.5}, "test_csn": {"mrr": 0.25},
                            "cosqa": {"dev_mrr_answered": {"mrr": 0.1}, "dev_accuracy_5fold": 0.6,
                                      "test_mrr_all_pairs": {"mrr": 0.2}}},
                    "attention": {"fusion": "attention", "error": "OOM"}})
    assert got == ["| weighted sum | 0.500 | 0.250 | 0.100 | 0.600 | 0.200 | 700 |", "| attention | failed: OOM | | | | | |"]


def test_index_vectors_keep_the_ranking_of_float_vectors():
    """int8 vectors in the index score within 1% of the float ones' range; the n best come best first,
    equal scores in the tie order."""
    from anycode.model import search_index as si
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 64)).astype(np.float32)
    q = rng.normal(size=64).astype(np.float32)
    rows, scales = si.unpack_vectors([si.pack_vector(v) for v in vecs])
    got, want = si.vector_scores(rows, scales, q, block=7), vecs @ q
    assert np.abs(got - want).max() < 0.01 * np.abs(want).max()
    assert si.top(want, np.ones(300, bool), 5, lambda i: i) == list(np.argsort(-want)[:5])
    assert si.top(np.array([1.0, 2.0, 2.0, 0.5]), np.array([True, True, True, False]), 2, lambda i: -i) == [2, 1]
    assert si.top(np.zeros(3), np.zeros(3, bool), 2, lambda i: i) == []
