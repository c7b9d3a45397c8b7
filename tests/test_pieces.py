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
