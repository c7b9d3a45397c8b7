"""Bring a run's weights back from the device: fp16 state dict in parts under 16 MiB.

    python3 tools/device/weights.py RUN_DIR OUT_DIR NAME [--last]   (on the device)
    python3 tools/device/weights.py --join OUT_DIR NAME RUN   (here: parts -> RUN/slm.pt)
"""
import io
import shutil
import sys
from pathlib import Path

import torch

PART = 15 * 2**20


def split(run: Path, out: Path, name: str, last: bool = False) -> None:
    """best.pt (the best greedy dev acc@1 of the run's dev checks: 200 examples, noisy) unless
    `last`, which takes the latest checkpoint's weights."""
    out.mkdir(parents=True, exist_ok=True)
    for f in (("ckpt.pt",) if last else ("best.pt", "ckpt.pt")):
        if (run / f).exists():
            state = torch.load(run / f, map_location="cpu", weights_only=False)
            break
    else:
        raise SystemExit(f"no best.pt or ckpt.pt in {run}")
    state = state["model"] if isinstance(state.get("model"), dict) else state
    buf = io.BytesIO()
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, buf)
    data = buf.getvalue()
    for i in range(0, len(data), PART):
        (out / f"{name}.part{i // PART}").write_bytes(data[i: i + PART])
    for f in ("config.json", "vocab.json", "grammar.json", "log.jsonl"):
        if (run / f).exists():
            shutil.copy(run / f, out / f"{name}.{f}")


def join(parts: Path, name: str, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    pieces = sorted(parts.glob(f"{name}.part*"), key=lambda p: int(p.suffix[5:]))
    (run / "slm.pt").write_bytes(b"".join(p.read_bytes() for p in pieces))
    for f in ("config.json", "vocab.json", "grammar.json", "log.jsonl"):
        if (parts / f"{name}.{f}").exists():
            shutil.copy(parts / f"{name}.{f}", run / f)


if __name__ == "__main__":
    if sys.argv[1] == "--join":
        join(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        split(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], last="--last" in sys.argv[4:])
