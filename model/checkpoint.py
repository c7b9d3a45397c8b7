"""Loading a trained SLM: a run directory or a shipped model directory -> (model, vocab, config).

Below training, evaluation, export and diagnosis, which all load weights through here
(so none of them imports another only to load a model).  Needs torch (the train extra).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from anycode.model.slm import SLM, SLMConfig
from anycode.model.vocab import Vocab

WEIGHT_FILES = ("best.pt", "slm.pt", "ckpt.pt")   # in this order: a run's best, a shipped model, a run's latest


def load_model(path: Path, device="cpu") -> tuple[SLM, Vocab, dict]:
    """A run directory (best.pt, else ckpt.pt) or a shipped one (slm.pt, fp16) -> model in eval mode, fp32."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no config.json in {path}: give a run directory (anycode train --out) "
                                f"or a model directory such as model/shipped")
    conf = json.loads((path / "config.json").read_text())
    vocab = Vocab.load(path / "vocab.json")
    model = SLM(SLMConfig(**conf["model"]))
    for name in WEIGHT_FILES:
        f = path / name
        if f.exists():
            state = load_checkpoint(f)
            state = state["model"] if "model" in state and isinstance(state["model"], dict) else state
            model.load_state_dict({k: v.float() for k, v in state.items()})
            break
    else:
        raise FileNotFoundError(f"no weights in {path} (looked for {', '.join(WEIGHT_FILES)})")
    return model.to(device).eval(), vocab, conf


def load_checkpoint(f: Path) -> dict:
    """torch.load, with an error that names the file when it is partial or corrupt."""
    try:
        return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors alike
        raise SystemExit(f"error: {f} is not a readable checkpoint ({type(e).__name__}: {e}); a partial copy "
                         f"or a corrupt file? Bring it again (tools/device/weights.py --join checks pieces), "
                         f"or move the run directory aside to start over") from e


def pick_device(name: str) -> torch.device:
    """"auto" -> cuda when torch sees a GPU, else cpu; any other name as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def baseline_state(folder: Path) -> tuple[dict, dict]:
    """A baseline run's (model config, state dict): from best.pt, else ckpt.pt ({"config", "model",
    ...}), else the fp16 weights tools/device/weights.py joined as slm.pt beside config.json."""
    folder = Path(folder)
    for name in ("best.pt", "ckpt.pt"):
        if (folder / name).exists():
            blob = torch.load(folder / name, map_location="cpu", weights_only=False)
            return blob["config"], blob["model"]
    if not (folder / "slm.pt").exists() or not (folder / "config.json").exists():
        raise SystemExit(f"error: {folder} holds no baseline weights (best.pt, ckpt.pt, or slm.pt with "
                         "config.json): give a run folder of `anycode fim|s2s train`, or join a device "
                         "run's parts there with tools/device/weights.py --join")
    config = json.loads((folder / "config.json").read_text())["model"]
    return config, torch.load(folder / "slm.pt", map_location="cpu", weights_only=True)


def load_baseline(folder: Path, model_class, config_class, device="cpu"):
    """A baseline run's model (model/fim.py, model/s2s.py) in float32, in eval mode (`baseline_state`)."""
    config, state = baseline_state(folder)
    model = model_class(config_class(**config))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval()
