"""Shared helpers for the server tests: start `anycode serve` as a real process
and drive it with pytest-lsp's client.

ANYCODE_TEST_COMPLETER=module:factory runs the server tests against another
completer (the server's hidden --completer hook), e.g. while the model is
being trained; by default they use the real runtime and the shipped model, and
without it, a small untrained model is exported for them (model_settings).
"""
from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

from anycode.server.replay import EditorText  # the editor's side of positions (a str, no bytes)

TEST_COMPLETER = os.environ.get("ANYCODE_TEST_COMPLETER", "")
SERVER_CMD = [sys.executable, "-m", "anycode", "serve"] + (
    ["--completer", TEST_COMPLETER] if TEST_COMPLETER else [])


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The tests' float graphs (model/float_graphs.py) are cached in a folder of their own, not in
    the user's cache."""
    old = os.environ.get("ANYCODE_CACHE_DIR")
    os.environ["ANYCODE_CACHE_DIR"] = str(tmp_path_factory.mktemp("anycode-cache"))
    yield
    if old is None:
        os.environ.pop("ANYCODE_CACHE_DIR", None)
    else:
        os.environ["ANYCODE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def model_settings(tmp_path_factory) -> dict:
    """Settings that give the server a model: {} for the shipped one (model/shipped);
    without it, a small untrained SLM exported the same way (its candidates are
    nonsense but grammatical, which is all the server tests look at), through
    `modelPath`.  Skips when there is neither a shipped model nor torch to export one."""
    if TEST_COMPLETER:
        return {}
    from anycode.model.runtime import SHIPPED
    if (SHIPPED / "manifest.json").exists():
        return {}
    try:
        from anycode.model.checkpoint import load_model
        from anycode.model.export import export, write_untrained_checkpoint
        from slm_fixtures import tiny_dataset
    except ImportError as exc:  # torch: the `train` extra
        pytest.skip(f"no exported model in {SHIPPED} and no torch to export a test one: {exc}")
    data = tiny_dataset(tmp_path_factory.mktemp("server-data"))
    ckpt = write_untrained_checkpoint(data, tmp_path_factory.mktemp("server-ckpt"), d_type=96,
                                      d_index=32, d_subtoken=128, d_lstm=64, n_layers=2,
                                      n_heads=4, d_ff=256)
    out = tmp_path_factory.mktemp("server-model")
    export(*load_model(ckpt), out, "fp16", ckpt / "grammar.json")
    return {"modelPath": str(out)}


async def start_server(init_options: dict | None = None, config: dict | None = None, *,
                       utf8: bool = False, capabilities: types.ClientCapabilities | None = None,
                       wait: bool = True, args: tuple[str, ...] = (), env: dict | None = None,
                       folders: list | None = None) -> LanguageClient:
    """A server process, initialized (with `folders`, Paths, as its workspace folders); with wait, its
    model loaded (or failed)."""
    client = make_test_lsp_client()
    client.statuses = []
    client.feature("anycode/status")(lambda params: client.statuses.append(params))
    client.registrations = []
    client.feature(types.CLIENT_REGISTER_CAPABILITY)(lambda params: client.registrations.append(params))
    await client.start_io(*SERVER_CMD, *args, **({"env": env} if env is not None else {}))
    if config is not None:
        client.set_configuration(config, section="anycode")
    caps = capabilities or client_capabilities("visual-studio-code")
    if utf8:
        caps.general = types.GeneralClientCapabilities(position_encodings=["utf-16", "utf-8"])
    workspace = [types.WorkspaceFolder(uri=f.as_uri(), name=f.name) for f in folders or []]
    client.init_result = await client.initialize_session(types.InitializeParams(
        capabilities=caps, initialization_options=init_options, workspace_folders=workspace or None,
        root_uri=workspace[0].uri if workspace else None))
    if wait:
        await wait_status(client, ("ready", "error"))
    return client


async def stop_server(client: LanguageClient) -> None:
    await client.shutdown_session()
    await client.stop()


async def wait_status(client: LanguageClient, states, timeout: float = 60.0, after: int = 0):
    """The first anycode/status with a state in `states`, from index `after` on."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for st in client.statuses[after:]:
            if st.state in states:
                return st
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no anycode/status in {states}; got {client.statuses}")


def position(text: str, index: int, encoding: str = "utf-16") -> types.Position:
    return types.Position(**EditorText(text, encoding).position(index))


def index_of(text: str, pos: types.Position, encoding: str = "utf-16") -> int:
    return EditorText(text, encoding).index({"line": pos.line, "character": pos.character})


class Doc:
    """An open document on the client side: sends edits, asks for completions."""

    def __init__(self, client: LanguageClient, uri: str, text: str, encoding: str = "utf-16"):
        self.client, self.uri, self.text, self.encoding, self.version = client, uri, text, encoding, 1
        client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=text)))

    def pos(self, index: int) -> types.Position:
        return position(self.text, index, self.encoding)

    def edit(self, start: int, end: int, new: str) -> None:
        rng = types.Range(self.pos(start), self.pos(end))
        self.text = self.text[:start] + new + self.text[end:]
        self.version += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=new)]))

    def completion_params(self, index: int):
        return types.CompletionParams(types.TextDocumentIdentifier(self.uri), self.pos(index))

    def send_completion(self, index: int, msg_id=None) -> asyncio.Future:
        """A completion request sent now (the client's *_async methods send when awaited)."""
        return asyncio.wrap_future(self.client.protocol.send_request(
            types.TEXT_DOCUMENT_COMPLETION, self.completion_params(index), msg_id=msg_id))

    async def complete(self, index: int) -> types.CompletionList:
        return await self.client.text_document_completion_async(self.completion_params(index))

    async def inline(self, index: int) -> types.InlineCompletionList:
        return await self.client.text_document_inline_completion_async(types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(self.uri), position=self.pos(index)))

    def apply(self, rng: types.Range, new_text: str) -> str:
        a, b = index_of(self.text, rng.start, self.encoding), index_of(self.text, rng.end, self.encoding)
        return self.text[:a] + new_text + self.text[b:]


async def stats(client: LanguageClient):
    return await client.protocol.send_request_async("anycode/stats", {})
