"""Recorded editor sessions (tests/sessions/*.jsonl, made by
`python -m anycode.server.replay record`) played against a fresh server: every
answer must be well formed, come within the time budget plus slack, and every
candidate must parse when its edit is applied (server/replay.py: check_answer).
The sessions carry the document edits, so they replay the same whatever the
model answers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from anycode.server.replay import play
from conftest import SERVER_CMD

SESSIONS = sorted((Path(__file__).parent / "sessions").glob("*.jsonl"))
SLACK_MS = 500  # scheduling on a loaded 2-core machine, the last beam step past the deadline


def test_the_sessions():
    assert len(SESSIONS) >= 5
    edits = {}
    for path in SESSIONS:
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        assert lines[0]["kind"] == "meta"
        methods = [r["msg"]["method"] for r in lines if r["kind"] == "send"]
        assert methods[0] == "textDocument/didOpen"
        assert "textDocument/completion" in methods and "textDocument/didChange" in methods
        edits[path.name] = methods.count("textDocument/didChange")
    assert max(edits.values()) >= 300, edits  # one long session
    encodings = {json.loads(p.read_text(encoding="utf-8").split("\n", 1)[0])["encoding"] for p in SESSIONS}
    assert encodings == {"utf-8", "utf-16"}


@pytest.mark.slow
@pytest.mark.parametrize("path", SESSIONS, ids=lambda p: p.stem)
def test_replay(path, model_settings):
    extra = dict(model_settings)
    if "modelPath" in extra:  # the untrained stand-in rarely finishes a beam early: keep it short
        extra["timeBudgetMs"] = 150
    report = play(path, slack_ms=SLACK_MS, cmd=SERVER_CMD, extra_settings=extra)
    print(f"{path.name}: {report.summary()}")
    assert not report.problems, "\n".join(report.problems[:20])
    assert report.answered > 0 and report.answered + report.cancelled == report.requests
