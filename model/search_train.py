"""Train the code-search encoders (model/search_model.py) on packed pairs (model/search_pack.py).

    python -m anycode.model.search_train --data PACKED --out runs/search --variants concat,semantic \\
        --minutes 10 [--config base|fast|cpu|tiny] [--set d=256] [--device cuda]

Each variant (a fusion) trains in OUT/VARIANT for its share of the time: AdamW, linear warmup, then
a cosine decay over the variant's planned time, the paper's in-batch loss; every `eval_every`
seconds the dev MRR (CodeSearchNet's protocol) is measured and the best weights kept.  A run is
resumable: OUT/VARIANT/ckpt.pt holds the weights, the optimizer, the step and the time trained, and
a second call continues where it stopped (the planned time is the first call's).  At the end each
variant's best weights are measured on dev, test and CoSQA, written to OUT/VARIANT/eval.json and,
with `--export DIR`, DIR/search_eval.json (every variant's figures, and which is best by dev MRR)
and DIR/search_best.pt, the best variant's weights (half precision, without the path and end
tables, which the packed folder holds: small enough to come back from a device call).  numpy and torch only: it runs where tree-sitter is not installed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from anycode.model import search_eval
from anycode.model.search_pack import load_arrays
from anycode.model.search_model import FUSIONS, SearchConfig, SearchModel

CONFIGS = {
    "tiny": dict(d=32, heads=2, code_layers=1, query_layers=1, batch=16, lr=3e-3, warmup=5, eval_every=5.0),
    "base": dict(d=192, heads=4, code_layers=2, query_layers=2, batch=512, lr=1e-3, warmup=300, eval_every=20.0),
    # the code side at about a third of base's cost (one layer over the first 128 subtokens), for indexing speed
    "fast": dict(d=192, heads=4, code_layers=1, query_layers=2, max_code=128, batch=512, lr=1e-3, warmup=300,
                 eval_every=20.0),
    # what a 2-core CPU trains in minutes (about 450 pairs/s): narrower, one layer a side, the first 64 subtokens
    "cpu": dict(d=128, heads=4, code_layers=1, query_layers=1, max_code=64, batch=256, lr=2e-3, warmup=100,
                eval_every=120.0),
}
TRAIN_KEYS = ("batch", "lr", "warmup", "eval_every", "weight_decay")


def load_packed(folder: Path) -> dict:
    """The packed splits (numpy arrays), tables, vocabulary sizes and limits of a `search-data pack` folder."""
    folder = Path(folder)
    out = {**json.loads((folder / "meta.json").read_text()), "tables": load_arrays(folder / "tables.npz.xz")}
    for name in ("train", "dev", "test", "cosqa_dev", "cosqa_test"):
        if (folder / f"{name}.npz.xz").exists():
            out[name] = load_arrays(folder / f"{name}.npz.xz")
    return out


def make_config(data: dict, preset: str, fusion: str, overrides: dict) -> tuple[SearchConfig, dict]:
    """Model config and training settings from a preset, with --set overrides."""
    settings = {"weight_decay": 0.01, **CONFIGS[preset], **overrides}
    model_keys = {"path_nodes": data["limits"]["path_nodes"], "max_code": data["limits"]["code"],
                  "max_query": data["limits"]["query"],
                  **{k: v for k, v in settings.items() if k not in TRAIN_KEYS}}
    model_keys["max_code"] = min(model_keys["max_code"], data["limits"]["code"])
    cfg = SearchConfig(n_subtokens=data["sizes"]["subtokens"], n_node_types=data["sizes"]["node_types"],
                       fusion=fusion, **model_keys)
    return cfg, {k: settings[k] for k in TRAIN_KEYS}


def tensors(split: dict, device: str) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(split[k].astype(np.int64)).to(device) for k in ("query", "code", "ctx")}


@torch.no_grad()
def embed(model: SearchModel, split: dict[str, torch.Tensor], batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Query and code vectors [N, w] of a split."""
    model.eval()
    qs, cs = [], []
    for i in range(0, len(split["query"]), batch):
        with autocast(split["query"].device.type):
            qs.append(model.encode_query(split["query"][i: i + batch]).float())
            cs.append(model.encode_code(split["code"][i: i + batch], split["ctx"][i: i + batch]).float())
    model.train()
    return torch.cat(qs).cpu().numpy(), torch.cat(cs).cpu().numpy()


def autocast(device_type: str):
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda")


def csn_mrr(model: SearchModel, split: dict[str, torch.Tensor]) -> dict:
    q, c = embed(model, split)
    return search_eval.csn_mrr(len(q), lambda idx: q[idx] @ c[idx].T)


def cosqa(model: SearchModel, data: dict, device: str) -> dict | None:
    """CoSQA figures: each set's queries against its distinct functions."""
    if "cosqa_dev" not in data or "cosqa_test" not in data:
        return None
    mats = []
    for name in ("cosqa_dev", "cosqa_test"):
        s = data[name]
        q, c = embed(model, tensors(s, device))
        first = np.unique(s["code_id"], return_index=True)[1]      # one row per distinct function
        mats += [q @ c[first].T, s["code_id"], s["label"]]
    return search_eval.cosqa_report(*mats)


def lr_at(settings: dict, step: int, frac: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to a tenth over the planned time."""
    warm = min(1.0, (step + 1) / max(1, settings["warmup"]))
    return settings["lr"] * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """The step's pairs: epoch e is a permutation seeded by seed + e, so a resumed run sees the same."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)[k * batch: (k + 1) * batch]


def save_best(path: Path, model: SearchModel, tables: dict, info: dict) -> None:
    """Half-precision weights, config, tables and how they scored: what an export or eval reads.
    A tensor shared under several names (the subtoken embeddings) is stored once."""
    state, done = {}, {}
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.shape)
        if key not in done:
            done[key] = v.detach().to(torch.float16).cpu()
        state[k] = done[key]
    small = {k: torch.from_numpy(v.astype(np.int16 if v.max(initial=0) < 2 ** 15 else np.int32)) for k, v in tables.items()}
    torch.save({"config": model.cfg.to_dict(), "state": state, "info": info, "tables": small}, path)


def load_model(path: Path, device: str = "cpu", packed: Path | None = None) -> SearchModel:
    """A model from `save_best`'s file, in float32, in eval mode.  A file brought back from the
    device lacks the path and end tables: they come from the `packed` folder it was trained on."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    tables = blob.get("tables")
    if tables is None:
        if packed is None:
            raise ValueError(f"{path} holds no tables: give the packed folder it was trained on")
        tables = {k: torch.from_numpy(v) for k, v in load_arrays(Path(packed) / "tables.npz.xz").items()}
    model = SearchModel(SearchConfig(**blob["config"]), tables)
    model.load_state_dict({k: v.float() for k, v in blob["state"].items()})
    return model.to(device).eval()


def train_variant(data: dict, out: Path, fusion: str, args) -> dict:
    """Train (or resume) one variant for at most args.seconds; returns its eval figures."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, settings = make_config(data, args.config, fusion, args.overrides)
    torch.manual_seed(args.seed)
    tables = {k: torch.from_numpy(v) for k, v in data["tables"].items()}
    model = SearchModel(cfg, tables).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    state = {"step": 0, "trained_s": 0.0, "planned_s": args.seconds, "best_dev": -1.0, "history": []}
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        blob = torch.load(ckpt, map_location=args.device, weights_only=False)
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        state = blob["state"]
        print(f"{fusion}: resumed at step {state['step']}", file=sys.stderr)
    train, dev = tensors(data["train"], args.device), tensors(data["dev"], args.device)
    n = len(train["query"])
    t0 = time.time()
    last_eval = t0
    batch = min(settings["batch"], n)

    def check():
        m = csn_mrr(model, dev)["mrr"]
        state["history"].append((state["step"], round(state["trained_s"]), m))
        if m > state["best_dev"]:
            state["best_dev"] = m
            save_best(out / "best.pt", model, data["tables"], {"step": state["step"], "dev_mrr": m})
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
        print(f"{fusion}: step {state['step']} {state['trained_s']:.0f}s loss {loss.item():.3f} dev mrr {m:.4f}",
              file=sys.stderr, flush=True)

    loss = torch.zeros(())
    tick = t0
    while time.time() - t0 < args.seconds:
        for g in opt.param_groups:
            g["lr"] = lr_at(settings, state["step"], state["trained_s"] / state["planned_s"])
        idx = batch_indices(n, batch, state["step"], args.seed).to(args.device)
        with autocast(args.device.split(":")[0]):
            loss = model(train["query"][idx], train["code"][idx], train["ctx"][idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        now = time.time()
        state["trained_s"] += now - tick
        tick = now
        if now - last_eval >= settings["eval_every"]:
            check()
            last_eval = tick = time.time()    # evaluation time is not training time
    check()
    return evaluate(out / "best.pt", data, args.device)


def evaluate(weights: Path, data: dict, device: str) -> dict:
    model = load_model(weights, device)
    blob = torch.load(weights, map_location="cpu", weights_only=True)
    res = {"fusion": model.cfg.fusion, **blob["info"],
           "params": sum(p.numel() for p in model.parameters())}
    for split in ("dev", "test"):
        res[f"{split}_csn"] = csn_mrr(model, tensors(data[split], device))
    res["cosqa"] = cosqa(model, data, device)
    (weights.parent / "eval.json").write_text(json.dumps(res, indent=1))
    return res


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        out[k] = type(CONFIGS["base"].get(k, 0.0))(v) if k in CONFIGS["base"] else float(v) if "." in v else int(v)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default="concat", help=f"comma-separated, of {','.join(FUSIONS)}; 'all'")
    ap.add_argument("--minutes", type=float, required=True, help="for all variants together")
    ap.add_argument("--config", default="base", choices=sorted(CONFIGS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (a loaded CPU runs small ops slower on more)")
    ap.add_argument("--export", type=Path, help="folder for search_VARIANT.pt and search_eval.json")
    args = ap.parse_args(argv)
    args.overrides = parse_overrides(args.overrides)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    variants = list(FUSIONS) if args.variants == "all" else args.variants.split(",")
    data = load_packed(args.data)
    print(f"train {len(data['train']['query'])} dev {len(data['dev']['query'])} pairs; "
          f"variants {variants}; device {args.device}", file=sys.stderr, flush=True)
    results = {}
    t_start = time.time()
    for k, fusion in enumerate(variants):
        left = args.minutes * 60 - (time.time() - t_start)
        args.seconds = max(1.0, left / (len(variants) - k) - 20.0)   # what evaluation takes, roughly
        try:
            results[fusion] = train_variant(data, args.out / fusion, fusion, args)
        except Exception as e:  # noqa: BLE001 - one variant's failure must not cost the others their time
            traceback.print_exc()
            results[fusion] = {"fusion": fusion, "error": repr(e)}
        print(json.dumps(results[fusion]), file=sys.stderr, flush=True)
        if args.export:
            export_results(args.export, args.out, results)
    return 1 if any("error" in r for r in results.values()) else 0


def export_results(folder: Path, runs: Path, results: dict) -> None:
    """search_eval.json, and the best variant's weights so far as search_best.pt (without tables)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = {f: r for f, r in results.items() if "error" not in r}
    best = max(done, key=lambda f: done[f]["dev_csn"]["mrr"]) if done else None
    if best is not None:
        blob = torch.load(runs / best / "best.pt", map_location="cpu", weights_only=True)
        blob.pop("tables", None)
        torch.save(blob, folder / "search_best.pt")
    (folder / "search_eval.json").write_text(json.dumps({"best": best, **results}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
