"""The language interface: a second language, registered by id, drives hole finding, the dataset,
the search and the server's answers (tests/toy_language.py: Python's parser under the id "toypy",
whose holes are calls and attribute reads only and never a return statement's value)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from anycode import grammars
from anycode.grammars.python import PYTHON
from anycode.model import dataset, holes
from anycode.model.runtime import SHIPPED

from rawclient import RawServer, notification
from slm_fixtures import TRAIN_MODULES, module_file
from toy_language import TOY, TOY_ROOTS

TESTS = Path(__file__).parent
SMALL = dict(d_type=96, d_index=32, d_subtoken=128, d_lstm=64, n_layers=2, n_heads=4, d_ff=256)


@pytest.fixture(scope="module", autouse=True)
def registered():
    grammars.register(TOY)
    yield
    grammars.unregister(TOY.id)


def test_the_registry_finds_languages_by_id_language_id_and_model():
    assert grammars.get("python") is PYTHON and grammars.get("toypy") is TOY
    assert grammars.for_language_id("toypy") is TOY and grammars.for_language_id("python") is PYTHON
    assert grammars.for_language_id("", "file:///a/b.py") is PYTHON
    assert grammars.for_language_id("java") is None and grammars.for_language_id("", "file:///x.java") is None
    assert grammars.of_model(SHIPPED) is PYTHON          # it records no language: the default
    assert "toypy" in grammars.ids()
    with pytest.raises(KeyError):
        grammars.get("cobol")


def test_hole_finding_follows_the_language():
    src = b"def f(a, b):\n    c = g(a)\n    return \n"
    at_return = src.index(b"return ") + len(b"return ")
    at_assign = src.index(b"g(a)")
    assert holes.find_hole(src, at_return, lang=PYTHON) is not None
    assert holes.find_hole(src, at_return, lang=TOY) is None             # toypy: no hole in a return
    hole = holes.find_hole(src, at_assign, lang=TOY)
    assert hole is not None and hole.lang is TOY and hole.tree.lang is TOY
    typed = b"def f(a, b):\n    return a.\n"
    assert holes.find_typed_hole(typed, typed.index(b"a.") + 2, lang=PYTHON) is not None
    assert holes.find_typed_hole(typed, typed.index(b"a.") + 2, lang=TOY) is None


def _toy_dataset(root: Path) -> Path:
    for split, names in (("train", TRAIN_MODULES), ("dev", ["bisect"]), ("test", ["heapq"])):
        (root / split).mkdir(parents=True, exist_ok=True)
        results = [(f"{n}.py", dataset.extract_file(module_file(n), name=f"{n}.py", lang=TOY)) for n in names]
        dataset.write_shard(root / split / "shard-0000-toy.npz", results, TOY)
    dataset.build_vocab(root, 300).save(root / "vocab.json")
    dataset.build_grammar_table(root).save(root / "grammar.json")
    return root


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    return _toy_dataset(tmp_path_factory.mktemp("toy-data"))


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory, toy_data) -> Path:
    """A tiny random SLM on the toypy dataset of stdlib files, exported as a model directory."""
    pytest.importorskip("torch")
    from anycode.model.checkpoint import load_model
    from anycode.model.export import export, write_untrained_checkpoint
    ckpt = write_untrained_checkpoint(toy_data, tmp_path_factory.mktemp("toy-ckpt"), **SMALL)
    out = tmp_path_factory.mktemp("toy-model")
    export(*load_model(ckpt), out, "fp16", ckpt / "grammar.json")
    return out


def test_the_dataset_and_the_model_directory_record_the_language(toy_data, toy_model):
    data = toy_data
    shard = dataset.Shard(dataset.shard_paths(data, "train")[0])
    assert shard.lang is TOY and dataset.data_language(data) is TOY
    roots = {shard.example(i)[0].types[shard.example(i)[1]].split(":")[0] for i in range(len(shard))}
    assert roots and roots <= TOY_ROOTS
    # the same files as Python have other targets (operators, comparisons...)
    py = dataset.extract_file(module_file(TRAIN_MODULES[0]), name="x.py", lang=PYTHON)
    assert {f.types[h].split(":")[0] for f, hs, _ in py.functions for h in hs} - TOY_ROOTS
    for name in ("config.json", "manifest.json"):
        assert json.loads((toy_model / name).read_text())["language"] == "toypy"
    assert grammars.of_model(toy_model) is TOY


def _toy_holes(n: int = 8) -> list[tuple[bytes, int]]:
    """(source with a target cut out, cursor) for the first n toypy targets of a stdlib file."""
    source = Path(module_file("textwrap")).read_bytes()
    out = []
    for flat, hs, _ in dataset.extract_file(module_file("textwrap"), name="textwrap.py", lang=TOY).functions:
        for h in hs:
            a, b = flat.start_byte[h], flat.end_byte[h]
            out.append((source[:a] + source[b:], a))
    return out[:n]


def test_the_search_answers_with_the_languages_roots(toy_model):
    from anycode.model.runtime import Completer
    c = Completer(toy_model, device="cpu", threads=2)
    assert c.lang is TOY and c.decoder.lang is TOY
    allowed = {t.split(":")[0] for t, ok in zip(c.vocab.node_types, c.decoder.root_ok) if ok}
    assert allowed and allowed <= TOY_ROOTS
    c.soft_steps, c.max_steps, c.max_depth = 8, 24, 4     # random trees close sooner
    texts = []
    for src, cursor in _toy_holes():
        for cand in c.complete(src, cursor, beam_size=5, max_items=5):
            texts.append(cand.text)
            node = TOY.parse_expression(cand.text)
            assert node is not None and node.type.split(":")[0] in TOY_ROOTS, cand.text
    assert texts, "the tiny model gave no candidate at any hole"


def _serve(toy_model: Path) -> RawServer:
    env = {"ANYCODE_LANGUAGES": "toy_language:TOY",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    return RawServer("--model-path", str(toy_model), "--device", "cpu", env=env)


def test_the_server_picks_the_model_by_language_id(toy_model):
    src, cursor = _toy_holes(1)[0]
    text = src.decode()
    line = text[:cursor].count("\n")
    col = len(text[:cursor].split("\n")[-1].encode("utf-16-le")) // 2
    settings = {"anycode": {"timeBudgetMs": 20000, "beamSize": 5, "maxItems": 5}}
    with _serve(toy_model) as server:
        server.initialize({"processId": None, "rootUri": None, "capabilities": {},
                           "initializationOptions": settings})
        status = server.wait_for(lambda m: m.get("method") == "anycode/status"
                                 and m["params"].get("state") in ("ready", "error"), 120)
        assert status["params"]["state"] == "ready", status
        answers = {}
        for k, (uri, language_id) in enumerate([("file:///w/a.toypy", "toypy"), ("file:///w/a.py", "python"),
                                                ("file:///w/A.java", "java"), ("file:///w/b.toypy", "")]):
            server.send(notification("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": language_id, "version": 1, "text": text}}))
            answer = server.call(100 + k, "textDocument/completion", {
                "textDocument": {"uri": uri}, "position": {"line": line, "character": col}}, timeout=60)
            assert "error" not in answer, answer
            result = answer["result"]
            answers[uri] = result if isinstance(result, list) else result["items"]
        toy = [i["label"] for i in answers["file:///w/a.toypy"]]
        assert toy, "the toypy model gave no candidate through the server"
        for label in toy:
            node = TOY.parse_expression(label)
            assert node is not None and node.type.split(":")[0] in TOY_ROOTS, label
        # toypy by its file suffix alone; python has no model in this server; java no language at all
        assert [i["label"] for i in answers["file:///w/b.toypy"]] == toy
        assert answers["file:///w/a.py"] == [] and answers["file:///w/A.java"] == []
        assert server.proc.poll() is None and b"Traceback" not in server.stderr, server.stderr[-3000:]
        server.call(999, "shutdown")
        server.send(notification("exit"))
        assert server.wait_exit() == 0
