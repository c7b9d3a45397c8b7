"""Pack dataset splits for a device call, smaller than `tar | xz` of the shards as built.

    python3 tools/device/pack_dataset.py DATA OUT.tar.xz [--splits train,dev] [--shards START:END[:STEP]] [--no-meta]

Shards are zip files of deflated arrays, which xz cannot shrink further; here each shard's arrays are
stored uncompressed (the same .npz, ZIP_STORED: `np.load` reads it as before) and its .json keeps only
`version` and `files` (what reading a shard needs; the counts and grammar are for `dataset build`),
so that xz sees raw arrays: the dev split packs to 2.3 MB instead of 3.7.  vocab.json, grammar.json
and summary.json go along.  On the device, tools/device/setup.sh unpacks .carry/ds*/*.tar.xz into
/tmp/ds/python."""
import argparse
import json
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path


def repack(src: Path, dst: Path, shards: slice = slice(None)) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted(src.glob("shard-*.npz"))[shards]:
        with zipfile.ZipFile(p) as zin, zipfile.ZipFile(dst / p.name, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr(info.filename, zin.read(info.filename))
        meta = json.loads(p.with_suffix(".json").read_text())
        (dst / p.with_suffix(".json").name).write_text(
            json.dumps({k: meta[k] for k in ("version", "files") if k in meta}))
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--splits", default="train,dev")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shards", default=":", help="START:END[:STEP], a slice of each split's shards (pieces of a split; 0::4 every fourth)")
    ap.add_argument("--no-meta", action="store_true", help="without vocab.json, grammar.json, summary.json")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = []
        for split in a.splits.split(","):
            cut = slice(*(int(x) if x else None for x in a.shards.split(":")))
            print(f"{split}: {repack(a.data / split, tmp / split, cut)} shards", flush=True)
            names.append(split)
        for f in ("vocab.json", "grammar.json", "summary.json"):
            if (a.data / f).exists() and not a.no_meta:
                shutil.copy(a.data / f, tmp / f)
                names.append(f)
        with open(a.out, "wb") as fh:
            tar = subprocess.Popen(["tar", "-cf", "-", *names], cwd=tmp, stdout=subprocess.PIPE)
            subprocess.run(["xz", f"-T{a.threads}", "-6"], stdin=tar.stdout, stdout=fh, check=True)
            if tar.wait():
                raise SystemExit("tar failed")
    print(f"{a.out}: {a.out.stat().st_size / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
