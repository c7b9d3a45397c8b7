"""Neovim's built-in LSP client against the real server.

Debian's `neovim` (0.7.x on Debian 12) runs headless on a real Python file with
a hole and asks `<python> -m anycode serve` for completions through its own
client (tests/nvim/probe.lua): vim.lsp.start_client + buf_attach_client, then
vim.lsp.buf_request_sync("textDocument/completion") at the hole, and Neovim
itself applies the first item's textEdit.  Checked here: at least one
candidate comes back, the edited buffer parses with tree-sitter without
errors, and it is the edit the item describes.  The second test loads
editors/nvim through a minimal init (`-u`) and its setup(): the plugin must
attach the client to the Python buffer by itself, pass its settings under the
`anycode` section (anycode/stats shows what the server took), complete, and
change settings on the fly with update_settings().

The model: model/shipped when it holds an export; else model/shipped's
checkpoint exported to a temporary directory; else a small untrained SLM
exported there (its candidates are nonsense but grammatical), passed to the
server through the `modelPath` setting.  `make test` installs neovim when it
is missing; run directly without it, these tests skip.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anycode.grammars import python as grammar

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "nvim" / "probe.lua"
PLUGIN = ROOT / "editors" / "nvim"
SERVER_CMD = [sys.executable, "-m", "anycode", "serve"]
NVIM = shutil.which("nvim")
RUN_TIMEOUT = 120  # seconds for one Neovim run (the server's model load included)


def _nvim_version() -> tuple[int, ...] | None:
    if NVIM is None:
        return None
    out = subprocess.run([NVIM, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"NVIM v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


NVIM_VERSION = _nvim_version()
pytestmark = [
    pytest.mark.skipif(NVIM is None, reason="nvim is not installed: `make test` installs it "
                       "(apt-get install neovim); pytest run directly does not"),
    pytest.mark.skipif(NVIM is not None and (NVIM_VERSION or (0,)) < (0, 7),
                       reason=f"Neovim 0.7 or newer is needed, found {NVIM_VERSION}"),
]

# A real module; HOLE marks where the expression is missing, FILL what the other slot holds.
MODULE = '''"""Stock counts kept in a JSON file."""
import json
from pathlib import Path


class Inventory:
    def __init__(self, path):
        self.path = Path(path)
        self.items = {}

    def load(self):
        with open(self.path) as f:
            self.items = json.load(f)
        return len(self.items)

    def total(self, prices):
        total = 0
        for name, count in self.items.items():
            total += prices[name] * count
        return <total>


def restock(inventory, name, amount):
    current = <current>
    inventory.items[name] = current + amount
    return inventory.items[name]
'''
FILLS = {"total": "total", "current": "inventory.items.get(name, 0)"}
HOLES = {"return": "total", "assignment": "current"}


def source_with_hole(slot: str) -> tuple[str, int, int]:
    """The module with `slot` empty: (text, 0-based line, 0-based column) of the hole."""
    text = MODULE
    for name, fill in FILLS.items():
        if name != slot:
            text = text.replace(f"<{name}>", fill)
    index = text.index(f"<{slot}>")
    text = text.replace(f"<{slot}>", "")
    line = text.count("\n", 0, index)
    col = index - (text.rfind("\n", 0, index) + 1)  # ASCII: UTF-16 units = characters
    return text, line, col


def apply_edit(text: str, rng: dict, new_text: str) -> str:
    """A textEdit applied to ASCII text (LSP positions: 0-based line, character)."""
    lines = text.split("\n")

    def offset(pos):
        return sum(len(ln) + 1 for ln in lines[:pos["line"]]) + pos["character"]
    return text[:offset(rng["start"])] + new_text + text[offset(rng["end"]):]


@pytest.fixture(scope="module")
def model_settings(tmp_path_factory) -> dict:
    """Settings that point the server at a model it can load (see the module doc)."""
    from anycode.model.runtime import SHIPPED
    if (SHIPPED / "manifest.json").exists():
        return {}
    try:
        from anycode.model.checkpoint import load_model
        from anycode.model.export import export, write_untrained_checkpoint
    except ImportError as exc:  # torch: the `train` extra
        pytest.skip(f"no exported model in {SHIPPED} and no torch to export one: {exc}")
    out = tmp_path_factory.mktemp("nvim-model")
    if (SHIPPED / "config.json").exists() and (SHIPPED / "slm.pt").exists():
        ckpt = SHIPPED
    else:
        from slm_fixtures import tiny_dataset
        data = tiny_dataset(tmp_path_factory.mktemp("nvim-data"))
        ckpt = write_untrained_checkpoint(data, tmp_path_factory.mktemp("nvim-ckpt"), d_type=96,
                                          d_index=32, d_subtoken=128, d_lstm=64, n_layers=2,
                                          n_heads=4, d_ff=256)
    model, vocab, conf = load_model(ckpt)
    grammar_json = ckpt / "grammar.json"
    export(model, vocab, conf, out, "fp16", grammar_json if grammar_json.exists() else None)
    return {"modelPath": str(out)}


def run_nvim(tmp: Path, args: list[str], env: dict[str, str], line: int, col: int) -> dict:
    """Run Neovim headless with the probe; its JSON report."""
    out = tmp / "report.json"
    full_env = dict(os.environ, PROBE_OUT=str(out), PROBE_LINE=str(line), PROBE_COL=str(col),
                    PROBE_TIMEOUT_MS="60000", **env)
    for xdg in ("CONFIG", "DATA", "STATE", "CACHE"):  # no user config; lsp.log lands in tmp
        full_env[f"XDG_{xdg}_HOME"] = str(tmp / xdg.lower())
    cmd = [NVIM, "--headless", "-i", "NONE", "-n", *args, "-c", f"luafile {PROBE}"]
    try:
        proc = subprocess.run(cmd, env=full_env, cwd=tmp, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"nvim did not finish in {RUN_TIMEOUT} s: {exc.stderr!r}\n{lsp_log(tmp)}")
    if not out.exists():
        pytest.fail(f"nvim wrote no report (rc {proc.returncode}): {proc.stderr}\n{lsp_log(tmp)}")
    report = json.loads(out.read_text())
    report["lsp_log"] = lsp_log(tmp)
    return report


def lsp_log(tmp: Path) -> str:
    logs = [p.read_text(errors="replace")[-4000:] for p in tmp.rglob("lsp.log")]
    return "lsp.log:\n" + "\n".join(logs) if logs else "(no lsp.log)"


def check_completion(report: dict, text: str, line: int, col: int) -> str:
    """The common checks; the edited buffer."""
    assert report.get("error") is None, f"{report['error']}\n{report['lsp_log']}"
    assert report["attached"] is True
    assert report["completion_provider"] and report["inline_completion_provider"]
    status = report.get("status") or {}
    assert status.get("state") == "ready", (f"the model did not load: {status} "
                                            f"{report['messages']}\n{report['lsp_log']}")
    items = report["items"]
    assert items, f"no completion items at {line}:{col}: {report}"
    first = items[0]
    assert first["text"].strip(), first
    rng = first["range"]
    assert rng["start"]["line"] == rng["end"]["line"] == line, rng
    assert rng["start"]["character"] <= col <= rng["end"]["character"], rng
    # Neovim's own edit is the one the item describes
    expected = apply_edit(text, rng, first["text"])
    assert report["applied"] == expected
    tree = grammar.parse(report["applied"].encode())
    assert not tree.root_node.has_error, f"does not parse with {first['text']!r}:\n{report['applied']}"
    return report["applied"]


@pytest.mark.parametrize("hole", sorted(HOLES))
def test_completion_through_neovims_client(tmp_path, model_settings, hole):
    text, line, col = source_with_hole(HOLES[hole])
    path = tmp_path / "inventory.py"
    path.write_text(text)
    settings = {"device": "cpu", "timeBudgetMs": 10000, **model_settings}
    report = run_nvim(tmp_path, ["-u", "NONE", str(path)],
                      {"PROBE_MODE": "client", "ANYCODE_CMD": json.dumps(SERVER_CMD),
                       "ANYCODE_SETTINGS": json.dumps(settings)}, line, col)
    assert report["nvim"].startswith(".".join(map(str, NVIM_VERSION[:2])))
    applied = check_completion(report, text, line, col)
    print(f"nvim {report['nvim']} {hole}: {len(report['items'])} items, "
          f"completion {report['completion_ms']:.0f} ms, first: {applied.splitlines()[line].strip()!r}")
    assert report["stats"]["settings"]["timeBudgetMs"] == 10000  # init_options under `anycode`
    assert report["stopped"] is True  # the server shut down when asked


def lua_json(value) -> str:
    """A Lua expression for a JSON-able value (decoded by Neovim itself)."""
    return f"vim.fn.json_decode([==[{json.dumps(value)}]==])"


def test_plugin_setup_attaches_and_completes(tmp_path, model_settings):
    text, line, col = source_with_hole(HOLES["return"])
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'inventory'\n")
    path = project / "inventory.py"
    path.write_text(text)
    settings = {"device": "cpu", "beamSize": 3, "maxItems": 2, "timeBudgetMs": 10000,
                "threads": 1, **model_settings}
    init = tmp_path / "init.lua"
    init.write_text(
        "-- minimal init: the plugin from this checkout, nothing else\n"
        f"vim.opt.runtimepath:prepend({lua_json(str(PLUGIN))})\n"
        f"require('anycode').setup({{ cmd = {lua_json(SERVER_CMD)}, settings = {lua_json(settings)} }})\n")
    report = run_nvim(tmp_path, ["-u", str(init), str(path)],
                      {"PROBE_MODE": "plugin", "PROBE_UPDATE": json.dumps({"maxItems": 4})}, line, col)
    assert report.get("error") is None, f"{report['error']}\n{report['lsp_log']}"
    assert report["client_name"] == "anycode"
    assert report["root_dir"] == str(project)  # the pyproject.toml above the file
    assert report["omnifunc"] == "v:lua.vim.lsp.omnifunc"
    check_completion(report, text, line, col)
    assert 1 <= len(report["items"]) <= 2
    # every setting arrived under the `anycode` section
    took = report["stats"]["settings"]
    for key, value in settings.items():
        assert took[key] == value, (key, took)
    # update_settings(): didChangeConfiguration, and the server pulls the new section
    after = report["stats_after_update"]["settings"]
    assert after == {**took, "maxItems": 4}, after
    assert report["stats_after_update"]["loads"] == 1  # no model key changed: no reload
    uris = [d["uri"] for d in report["stats"]["documents"]]
    assert uris == [path.as_uri()], uris
    assert report["stopped"] is True


def test_anycode_search_fills_the_quickfix_list(tmp_path, model_settings):
    """:AnycodeSearch through the plugin: the workspace (the root the plugin found) is indexed and its
    functions, ranked for the query, fill the quickfix list, best first."""
    text, line, col = source_with_hole(HOLES["return"])
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'inventory'\n")
    path = project / "inventory.py"
    path.write_text(text)
    (project / "pkg" / "net.py").write_text(
        'def fetch_page(url):\n    """Download a web page over HTTP."""\n    resp = None\n    return resp\n\n\n'
        'def write_report(rows):\n    """Write the summary report as HTML."""\n    html = []\n    return html\n')
    settings = {"device": "cpu", "timeBudgetMs": 10000, **model_settings}
    init = tmp_path / "init.lua"
    init.write_text(
        f"vim.opt.runtimepath:prepend({lua_json(str(PLUGIN))})\n"
        f"require('anycode').setup({{ cmd = {lua_json(SERVER_CMD)}, settings = {lua_json(settings)} }})\n")
    report = run_nvim(tmp_path, ["-u", str(init), str(path)],
                      {"PROBE_MODE": "plugin", "PROBE_SEARCH": "download a web page",
                       "XDG_CACHE_HOME": str(tmp_path / "cache")}, line, col)
    assert report.get("error") is None, f"{report['error']}\n{report['lsp_log']}"
    index = report["search_index"]
    assert index["state"] == "ready" and index["roots"] == [str(project)], index
    qf = report["quickfix"]
    assert qf["title"] == "anycode: download a web page", qf
    first = qf["items"][0]
    assert first["file"].endswith("pkg/net.py") and first["lnum"] == 1 and first["text"].startswith("fetch_page"), qf
    assert len(qf["items"]) == index["functions"], qf
    scores = [float(i["text"].rsplit("(", 1)[1].rstrip(")")) for i in qf["items"]]
    assert scores == sorted(scores, reverse=True), qf
