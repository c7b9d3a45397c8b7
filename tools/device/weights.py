"""Bring a run's weights back from the device: fp16 state dict in parts under 16 MiB, checked.

    python3 tools/device/weights.py RUN_DIR OUT_DIR NAME [--last] [--ckpt]   (on the device)
    python3 tools/device/weights.py --join OUT_DIR NAME RUN                  (here: parts -> RUN/slm.pt)

On the device: NAME.part0, NAME.part1, ... (the fp16 weights) and NAME.meta.tar (config.json,
vocab.json, grammar.json, log.jsonl and manifest.json: every part's size and sha256), so that a call
brings back the weights of a 16M-parameter model in 4 of its 8 files.  `--ckpt` also cuts the whole
checkpoint (fp32 weights, optimizer, scheduler, RNG and data position: what resumes a run exactly)
into NAME.ckpt.part0, ...; `--ckpt-only` brings only those (with the tar), for a call of its own.
Here, `--join` checks every part against the manifest before writing RUN/slm.pt (and RUN/ckpt.pt
when the checkpoint's parts came too): a missing, short or corrupt part is an error naming it.
"""
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

PART = 15 * 2**20
META = ("config.json", "vocab.json", "grammar.json", "log.jsonl")


class PieceError(SystemExit):
    pass


def _cut(data: bytes, out: Path, stem: str) -> list[dict]:
    parts = []
    for i in range(0, max(len(data), 1), PART):
        piece = data[i: i + PART]
        name = f"{stem}.part{i // PART}"
        (out / name).write_bytes(piece)
        parts.append({"name": name, "bytes": len(piece), "sha256": hashlib.sha256(piece).hexdigest()})
    return parts


def split(run: Path, out: Path, name: str, last: bool = False, ckpt: bool = False, ckpt_only: bool = False) -> None:
    """best.pt (the best greedy dev acc@1 of the run's dev checks: 200 examples, noisy) unless
    `last`, which takes the latest checkpoint's weights."""
    import torch
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"weights": [], "ckpt": []}
    if not ckpt_only:
        for f in (("ckpt.pt",) if last else ("best.pt", "ckpt.pt")):
            if (run / f).exists():
                state = torch.load(run / f, map_location="cpu", weights_only=False)
                break
        else:
            raise SystemExit(f"no best.pt or ckpt.pt in {run}")
        state = state["model"] if isinstance(state.get("model"), dict) else state
        buf = io.BytesIO()
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, buf)
        manifest["weights"] = _cut(buf.getvalue(), out, name)
    if ckpt or ckpt_only:
        manifest["ckpt"] = _cut((run / "ckpt.pt").read_bytes(), out, f"{name}.ckpt")
    with tarfile.open(out / f"{name}.meta.tar", "w") as tar:
        for f in META:
            if (run / f).exists():
                tar.add(run / f, arcname=f)
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _joined(parts: Path, listed: list[dict]) -> bytes:
    out = []
    for p in listed:
        f = parts / p["name"]
        if not f.exists():
            raise PieceError(f"error: {f} is missing ({len(listed)} parts listed in the manifest)")
        data = f.read_bytes()
        if len(data) != p["bytes"] or hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise PieceError(f"error: {f} is corrupt or partial: {len(data)} bytes, sha256 "
                             f"{hashlib.sha256(data).hexdigest()[:16]}..., the manifest says {p['bytes']} bytes, "
                             f"{p['sha256'][:16]}...; bring it again")
        out.append(data)
    return b"".join(out)


def join(parts: Path, name: str, run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    meta = parts / f"{name}.meta.tar"
    if not meta.exists():          # the older layout: parts and loose files, no manifest
        pieces = sorted(parts.glob(f"{name}.part*"), key=lambda p: int(p.suffix[5:]))
        if not pieces:
            raise PieceError(f"error: no {name}.part* and no {meta} in {parts}")
        (run / "slm.pt").write_bytes(b"".join(p.read_bytes() for p in pieces))
        for f in META:
            if (parts / f"{name}.{f}").exists():
                shutil.copy(parts / f"{name}.{f}", run / f)
        return
    try:
        with tarfile.open(meta) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        manifest = json.loads(files["manifest.json"])
    except (tarfile.TarError, KeyError, ValueError, OSError) as e:
        raise PieceError(f"error: {meta} is corrupt or partial ({e}); bring it again") from e
    if manifest["weights"]:
        (run / "slm.pt").write_bytes(_joined(parts, manifest["weights"]))
    if manifest["ckpt"]:
        tmp = run / "ckpt.pt.tmp"
        tmp.write_bytes(_joined(parts, manifest["ckpt"]))
        tmp.replace(run / "ckpt.pt")
    for f in META:
        if f in files:
            (run / f).write_bytes(files[f])


if __name__ == "__main__":
    if sys.argv[1] == "--join":
        join(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
    else:
        flags = sys.argv[4:]
        split(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], last="--last" in flags, ckpt="--ckpt" in flags,
              ckpt_only="--ckpt-only" in flags)
