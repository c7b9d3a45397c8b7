"""Bad pieces never pass silently: a corrupt or partial shard, checkpoint or carried part is an
error that names the file, and a run that lost its checkpoint does not start over from scratch."""
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from anycode.model import train
from anycode.model.dataset import Shard, ShardError, shard_paths

from slm_fixtures import tiny_dataset

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
CFG = replace(train.CONFIGS["tiny"], targets_per_batch=96, log_every=2, eval_every=1000, eval_examples=0,
              dev_loss_examples=8)


def weights_tool():
    spec = importlib.util.spec_from_file_location("weights", ROOT / "tools/device/weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = tiny_dataset(tmp_path_factory.mktemp("ds"))
    out = tmp_path_factory.mktemp("run")
    train.train(data, out, CFG, max_steps=3, device="cpu", log=lambda *a: None)
    return data, out


def test_a_truncated_shard_names_the_file(run, tmp_path):
    data, _ = run
    src = shard_paths(data, "train")[0]
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    shutil.copy(src.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(ShardError, match=bad.name):
        Shard(bad)


def test_a_corrupt_checkpoint_names_the_file_and_does_not_restart(run, tmp_path):
    data, out = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ck = copy / "ckpt.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="ckpt.pt"):
        train.train(data, copy, CFG, max_steps=5, device="cpu", log=lambda *a: None)
    ck.unlink()       # gone altogether: the log says a run was here
    with pytest.raises(SystemExit, match="no checkpoint"):
        train.train(data, copy, CFG, max_steps=5, device="cpu", log=lambda *a: None)


def test_carried_parts_are_checked(run, tmp_path):
    _, out = run
    w = weights_tool()
    w.PART = 40_000       # several parts even for a tiny model
    parts = tmp_path / "parts"
    w.split(out, parts, "m", last=True, ckpt=True)
    good = tmp_path / "good"
    w.join(parts, "m", good)
    model, _, _ = train.load_model(good)
    assert (good / "ckpt.pt").read_bytes() == (out / "ckpt.pt").read_bytes()
    assert (good / "config.json").exists()
    victim = sorted(parts.glob("m.ckpt.part*"))[1]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(SystemExit, match=victim.name):
        w.join(parts, "m", tmp_path / "bad")
    victim.unlink()
    with pytest.raises(SystemExit, match=f"{victim.name} is missing"):
        w.join(parts, "m", tmp_path / "bad2")


def test_shards_left_out_by_the_cap_come_back_once_featurized(run, tmp_path):
    """tools/device/featurize.py: the time cap moves unfinished shards out of the split, `--left`
    featurizes them beside a training run without moving them, and the next call puts them back, so
    that the run resumed there reads every shard from the features without featurizing again."""
    import subprocess
    import sys

    src, _ = run
    data = tmp_path / "ds"
    shutil.copytree(src, data)
    first = shard_paths(data, "train")[0]
    for suffix in (".npz", ".json"):
        shutil.copy(first.with_suffix(suffix), data / "train" / f"shard-0001-copy{suffix}")
    feat = tmp_path / "feat"
    tool = [sys.executable, str(ROOT / "tools/device/featurize.py"), str(data), str(feat), "--jobs", "1",
            "--max-paths", str(CFG.max_paths), "--max-length", str(CFG.max_length),
            "--file-tokens", str(CFG.file_tokens)]
    capped = subprocess.run(tool + ["--seconds", "0"], capture_output=True, text=True)
    assert capped.returncode == 1, capped.stderr      # nothing done in time: all left out
    assert not shard_paths(data, "train") and len(shard_paths(data, "train_left")) == 2
    with pytest.raises(ShardError, match="no train shards"):      # a run of this call says why it cannot start
        train.train(data, tmp_path / "r0", CFG, max_steps=1, device="cpu", log=lambda *a: None, features=feat)
    left = subprocess.run(tool + ["--seconds", "600", "--left"], capture_output=True, text=True)
    assert left.returncode == 0, left.stderr
    assert len(shard_paths(data, "train_left")) == 2          # featurized, not moved
    assert all((feat / "train" / p.stem / "done.json").exists() for p in shard_paths(data, "train_left"))
    back = subprocess.run(tool + ["--seconds", "600"], capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    assert "2 left-out shards featurized since" in back.stdout
    assert len(shard_paths(data, "train")) == 2 and not shard_paths(data, "train_left")
    logs = []
    train.train(data, tmp_path / "r", CFG, max_steps=2, device="cpu", log=logs.append, features=feat)
    assert not any("to featurize" in str(line) for line in logs)
    assert any("in 2 shards" in str(line) for line in logs)
