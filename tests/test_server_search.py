"""Code search through the real server (issue 23): a workspace folder indexed in the background with
$/progress, `anycode/search` and `?` in workspace/symbol, a saved edit followed, the index persisted
(a restart re-reads nothing), a corrupt index rebuilt, bad files skipped, and without bm25s an error
that says how to install it while completion goes on; by default the shipped encoders rank."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from anycode.model import search_index
from conftest import Doc, start_server, stats, stop_server

pytestmark = pytest.mark.asyncio

SEARCH = "anycode/search"
LEXICAL = {"searchRanking": "bm25"}   # these tests follow BM25's answers (words shared with the query)


def function(name: str, doc: str, body: str) -> str:
    return f'def {name}(path):\n    """{doc}"""\n    {body}\n    return path\n'


def make_project(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "config.py").write_text(
        function("load_settings", "Parse a configuration file into a dict of options.", "opts = {}") + "\n\n"
        + function("write_report", "Write the summary report as HTML.", "html = []"))
    (root / "pkg" / "net.py").write_text(
        "class Client:\n"
        + "".join("    " + line + "\n" for line in
                  function("fetch_page", "Download a web page over HTTP.", "resp = None").splitlines()))
    (root / "broken.py").write_text("def f(:\n")
    (root / "blob.py").write_bytes(b"\0\1\2 binary")
    (root / "huge.py").write_text("def big():\n" + "    x = 1\n" * (search_index.MAX_FILE_BYTES // 10 + 1))


def cache_env(tmp: Path) -> dict:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache")}


async def search(client, query: str, limit: int | None = None):
    params = {"query": query} if limit is None else {"query": query, "limit": limit}
    return await client.protocol.send_request_async(SEARCH, params)


async def wait_indexed(client, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = (await stats(client)).searchIndex
        if st.state == "ready":
            return st
        await asyncio.sleep(0.1)
    raise TimeoutError("the index never became ready")


def name_and_file(item) -> tuple[str, str]:
    return item["name"], Path(item["uri"].removeprefix("file://")).name


async def test_index_query_edit_save_and_symbols(tmp_path, model_settings):
    pytest.importorskip("bm25s")
    proj = tmp_path / "proj"
    make_project(proj)
    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=cache_env(tmp_path), wait=False)
    try:
        doc = Doc(client, (proj / "pkg" / "config.py").as_uri(), (proj / "pkg" / "config.py").read_text())
        st = await wait_indexed(client)
        assert st.files == 5 and st.functions == 3, st
        (watch,), = [r.registrations for r in client.registrations]
        assert watch.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES
        assert watch.register_options["watchers"][0]["globPattern"].startswith("**/*.")
        progress = [v for k, v in client.progress_reports.items() if k.startswith("anycode-index")]
        assert progress and progress[0][0].kind == "begin" and progress[0][-1].kind == "end"
        logs = [m.message for m in client.log_messages]
        assert any("broken.py: does not parse" in m for m in logs) and any("blob.py: binary" in m for m in logs)
        assert any("huge.py: huge" in m for m in logs)

        found = await search(client, "parse a config file")
        assert [name_and_file(i) for i in found][:1] == [("load_settings", "config.py")]
        assert found[0]["range"] == {"start": {"line": 0, "character": 0}, "end": {"line": 4, "character": 0}}
        assert all(a["score"] >= b["score"] for a, b in zip(found, found[1:])) and found[0]["score"] > 0
        top = await search(client, "download a web page", limit=1)
        assert [name_and_file(i) for i in top] == [("Client.fetch_page", "net.py")]
        assert top[0]["range"]["start"]["line"] == 1
        assert await search(client, "") == [] and await search(client, "   ") == []

        symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="?html summary report"))
        assert symbols[0].name == "write_report" and symbols[0].kind == types.SymbolKind.Function
        assert symbols[0].location.uri == doc.uri and symbols[0].location.range.start.line == 6
        assert await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="html summary report")) == []

        # an edit saved: the new function is found, the old one is gone
        new = function("resize_image", "Scale an image to the given size.", "img = None")
        (proj / "pkg" / "config.py").write_text(new)
        client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(doc.uri)))
        end = time.monotonic() + 30
        while time.monotonic() < end:
            found = await search(client, "scale an image")
            if found:
                break
            await asyncio.sleep(0.1)
        assert [name_and_file(i) for i in found][:1] == [("resize_image", "config.py")]
        assert all(i["name"] != "load_settings" for i in await search(client, "parse a config file"))

        # a file deleted, as the client's file watcher reports it
        (proj / "pkg" / "net.py").unlink()
        client.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[types.FileEvent(
            uri=(proj / "pkg" / "net.py").as_uri(), type=types.FileChangeType.Deleted)]))
        end = time.monotonic() + 30
        while await search(client, "download a web page") and time.monotonic() < end:
            await asyncio.sleep(0.1)
        assert await search(client, "download a web page") == []

        # completion still answers, and serving never loaded torch
        doc.edit(0, 0, "x = len(\n")
        await doc.complete(len("x = len("))
        assert (await stats(client)).torchLoaded is False
    finally:
        await stop_server(client)


async def test_search_all_symbols_setting(tmp_path, model_settings):
    pytest.importorskip("bm25s")
    proj = tmp_path / "proj"
    make_project(proj)
    client = await start_server({**model_settings, **LEXICAL, "searchAllSymbols": True}, folders=[proj],
                                env=cache_env(tmp_path), wait=False)
    try:
        await wait_indexed(client)
        symbols = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="download a web page"))
        assert [s.name for s in symbols][:1] == ["Client.fetch_page"]
    finally:
        await stop_server(client)


async def test_restart_rereads_nothing_and_a_corrupt_index_is_rebuilt(tmp_path, model_settings):
    pytest.importorskip("bm25s")
    proj = tmp_path / "proj"
    make_project(proj)
    env = cache_env(tmp_path)
    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=env, wait=False)
    try:
        first = await wait_indexed(client)
        assert first.reread == 5
    finally:
        await stop_server(client)
    index_file = Path(first.indexFile)
    assert index_file == search_index.index_file_for([proj], cache=tmp_path / "cache" / "anycode" / "search")
    assert index_file.exists()

    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=env, wait=False)
    try:
        again = await wait_indexed(client)
        assert again.reread == 0 and again.functions == 3
        assert [i["name"] for i in await search(client, "parse a config file", 1)] == ["load_settings"]
    finally:
        await stop_server(client)

    index_file.write_bytes(b"this is not a gzip file")
    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=env, wait=False)
    try:
        rebuilt = await wait_indexed(client)
        assert rebuilt.reread == 5 and rebuilt.functions == 3
        assert any("rebuilt" in m.message for m in client.log_messages)
        assert [i["name"] for i in await search(client, "parse a config file", 1)] == ["load_settings"]
    finally:
        await stop_server(client)
    assert len(search_index.load_index(index_file)["files"]) == 5


async def test_the_shipped_encoders_rank_by_meaning_with_or_without_bm25s(tmp_path, model_settings):
    """With the default ranking the shipped encoders rank (BM25 weighed in where bm25s is installed):
    a query that shares a word with the wrong function and none with the right one finds the right
    one, before and after an edit; without bm25s the encoders rank alone and the index is reused."""
    from anycode.model import search_runtime
    assert search_runtime.ships(), "the search encoders ship in model/shipped/search"
    pytest.importorskip("bm25s")
    proj = tmp_path / "proj"
    make_project(proj)
    query = "retrieve html from the internet"      # `html` is in write_report's docstring, not fetch_page's
    client = await start_server(model_settings, folders=[proj], env=cache_env(tmp_path), wait=False)
    try:
        st = await wait_indexed(client)
        assert st.ranking == "encoders+bm25" and st.functions == 3, st
        lexical = search_index.ranker(search_index.load_index(Path(st.indexFile)))
        assert [r[3] for r in lexical(query, 1)] == ["write_report"]
        assert [name_and_file(i) for i in await search(client, query, 1)] == [("Client.fetch_page", "net.py")]
        doc = (proj / "pkg" / "config.py").as_uri()
        (proj / "pkg" / "config.py").write_text(function("resize_image", "Scale an image to the given size.", "img = None"))
        client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(doc)))
        end = time.monotonic() + 30
        while time.monotonic() < end and (await stats(client)).searchIndex.functions != 2:
            await asyncio.sleep(0.1)
        assert [i["name"] for i in await search(client, "shrink a photo", 1)] == ["resize_image"]
    finally:
        await stop_server(client)

    hide = tmp_path / "hide" / "bm25s"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('bm25s hidden by the test')\n")
    env = {**cache_env(tmp_path), "PYTHONPATH": os.pathsep.join([str(hide.parent), os.environ.get("PYTHONPATH", "")])}
    client = await start_server(model_settings, folders=[proj], env=env, wait=False)
    try:
        st = await wait_indexed(client)
        assert st.ranking == "encoders" and st.reread == 0, st
        assert [i["name"] for i in await search(client, "shrink a photo", 1)] == ["resize_image"]
        assert [i["name"] for i in await search(client, query, 1)] == ["Client.fetch_page"]
    finally:
        await stop_server(client)


async def test_without_bm25s_search_says_how_to_install_and_completion_works(tmp_path, model_settings):
    proj = tmp_path / "proj"
    make_project(proj)
    hide = tmp_path / "hide" / "bm25s"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('bm25s hidden by the test')\n")
    env = {**cache_env(tmp_path), "PYTHONPATH": os.pathsep.join([str(hide.parent), os.environ.get("PYTHONPATH", "")])}
    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=env)
    try:
        await wait_indexed(client)
        with pytest.raises(JsonRpcException, match=r"anycode\[search\]"):
            await search(client, "parse a config file")
        with pytest.raises(JsonRpcException, match="bm25s"):
            await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="?parse a config file"))
        doc = Doc(client, (proj / "new.py").as_uri(), "import os\nx = os.path.join(\n")
        result = await doc.complete(len(doc.text))
        assert result.items, "completion answered nothing"
    finally:
        await stop_server(client)


async def test_search_before_any_folder_answers_empty(tmp_path, model_settings):
    pytest.importorskip("bm25s")
    client = await start_server({**model_settings, **LEXICAL}, env=cache_env(tmp_path), wait=False)
    try:
        assert await search(client, "parse a config file") == []
        assert (await stats(client)).searchIndex.state == "none"
    finally:
        await stop_server(client)


async def test_workspace_folders_added_and_removed(tmp_path, model_settings):
    pytest.importorskip("bm25s")
    first, second = tmp_path / "first", tmp_path / "second"
    make_project(first)
    second.mkdir()
    (second / "mail.py").write_text(function("send_mail", "Send an email message to a recipient.", "msg = None"))
    client = await start_server({**model_settings, **LEXICAL}, folders=[first], env=cache_env(tmp_path), wait=False)
    try:
        await wait_indexed(client)
        assert await search(client, "send an email message") == []
        assert [i["name"] for i in await search(client, "configuration options")] == ["load_settings"]
        folder = lambda p: types.WorkspaceFolder(uri=p.as_uri(), name=p.name)  # noqa: E731
        client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(added=[folder(second)], removed=[])))
        end = time.monotonic() + 30
        while not await search(client, "send an email message") and time.monotonic() < end:
            await asyncio.sleep(0.1)
        st = await wait_indexed(client)
        assert st.files == 6 and st.functions == 4, st
        assert [name_and_file(i) for i in await search(client, "send an email message")][:1] == [("send_mail", "mail.py")]
        client.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(added=[], removed=[folder(first)])))
        end = time.monotonic() + 30
        while await search(client, "configuration options") and time.monotonic() < end:
            await asyncio.sleep(0.1)
        st = await wait_indexed(client)
        assert st.files == 1 and st.roots == [str(second.resolve())], st
        assert await search(client, "configuration options") == []
    finally:
        await stop_server(client)


async def test_a_search_while_indexing_answers_at_once(tmp_path, model_settings):
    """Asked before the index is ready, anycode/search answers from what is indexed so far (never an
    error, never a wait for the whole folder), and the log says the index is still building."""
    pytest.importorskip("bm25s")
    proj = tmp_path / "big"
    proj.mkdir()
    for i in range(400):
        (proj / f"mod_{i:03d}.py").write_text("\n\n".join(
            function(f"handler_{i}_{j}", f"Handle event number {j} of module {i}.", "x = 1") for j in range(8)))
    client = await start_server({**model_settings, **LEXICAL}, folders=[proj], env=cache_env(tmp_path), wait=False)
    try:
        answers = []
        while True:
            st = (await stats(client)).searchIndex
            found = await search(client, "handle event number", limit=5)
            answers.append((st.state, st.done, st.total, len(found)))
            if st.state == "ready":
                break
            await asyncio.sleep(0.05)
        building = [a for a in answers if a[0] == "building"]
        assert building, f"the index was ready before the first search: {answers}"
        assert all(n <= 5 for *_, n in answers) and answers[-1][3] == 5
        partial = [a for a in building if 0 < a[1] < a[2]]
        if partial:
            assert any("still building" in m.message for m in client.log_messages)
        assert (await wait_indexed(client)).functions == 3200
    finally:
        await stop_server(client)


async def test_indexing_waits_while_completions_are_answered(tmp_path, monkeypatch):
    """Completions first: the indexing thread takes no file while the server answers one (`busy`),
    then indexes the folder once it is quiet."""
    from anycode.server import search as server_search
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    proj = tmp_path / "proj"
    make_project(proj)
    busy = [True]
    wi = server_search.WorkspaceIndex(lambda line: None, busy=lambda: busy[0])
    try:
        building = wi.open([proj], lambda done, total: None, lexical=True)
        await asyncio.sleep(1.0)
        assert wi.state == "building" and wi.done == 0 and not building.done()
        busy[0] = False
        await asyncio.wait_for(asyncio.wrap_future(building), 30)
        assert wi.state == "ready" and wi.done == wi.total == 5
        assert wi.counts()["functions"] == 3
    finally:
        wi.executor.shutdown(wait=False)
