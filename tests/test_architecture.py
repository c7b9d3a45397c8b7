"""The architecture's rules, read from the source: no import loops among anycode's modules, no
language named in model/ or server/ (they take a `Language`: anycode.grammars), and the command
lines that must start do."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"anycode": ROOT / "anycode", "anycode.model": ROOT / "model", "anycode.server": ROOT / "server",
            "anycode.grammars": ROOT / "grammars"}
NEUTRAL = {"anycode.grammars", "anycode.grammars.language"}   # what model/ and server/ may import of grammars/


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imported(path: Path, known) -> set[str]:
    """The modules of `known` that `path` imports anywhere (at the top or inside a function: a lazy
    import in a loop is still a loop in the design)."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return {m for m in out if m in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loops():
    mods = modules()
    assert {"anycode.model.train", "anycode.model.evaluate", "anycode.model.checkpoint",
            "anycode.server.lsp", "anycode.grammars.python"} <= set(mods)
    graph = {m: imported(f, mods) - {m} for m, f in mods.items()}
    assert graph["anycode.model.runtime"], "the import reader found nothing: it is broken"
    assert cycles(graph) == []


def test_model_and_server_name_no_language():
    """Only the registry (anycode.grammars) imports a language's module."""
    mods = modules()
    for name, path in mods.items():
        if name.startswith(("anycode.model", "anycode.server")):
            langs = {m for m in imported(path, mods) if m.startswith("anycode.grammars")} - NEUTRAL
            assert not langs, f"{name} imports {langs}: take a Language (anycode.grammars) instead"
            text = path.read_text(encoding="utf-8")
            assert "grammars.python" not in text and "grammars import python" not in text, name


def test_checkpoint_loading_sits_below_training_and_evaluation():
    mods = modules()
    below = imported(mods["anycode.model.checkpoint"], mods)
    assert not below & {"anycode.model.train", "anycode.model.evaluate", "anycode.model.export",
                        "anycode.model.diagnose"}
    for name in ("train", "evaluate", "export", "diagnose"):
        users = imported(mods[f"anycode.model.{name}"], mods)
        assert "anycode.model.train" not in users or name == "train", f"{name} imports train"


def test_train_help_runs():
    r = subprocess.run([sys.executable, "-m", "anycode.model.train", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--data" in r.stdout, r.stderr[-2000:]
