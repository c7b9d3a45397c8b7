"""Server settings: the `anycode` section of initializationOptions and of
workspace/configuration (the VS Code extension's package.json declares the same
keys and ranges).  Invalid values never fail: each one falls back to its default
and yields a warning for window/showMessage."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

SECTION = "anycode"
DEVICES = ("auto", "cpu", "cuda")
RANKINGS = ("auto", "bm25")   # auto: the shipped encoders (BM25 weighed in as they say), BM25 where none ship
MODELS = ("slm", "s2s", "fim")   # the SLM, or a baseline of issue 21 (model/baseline_runtime.py) at modelPath


@dataclass(frozen=True)
class Settings:
    model: str = "slm"           # one of MODELS
    device: str = "auto"
    beamSize: int = 5
    maxItems: int = 5
    timeBudgetMs: int = 300
    modelPath: str = ""          # "" = the shipped model (the SLM; a baseline has none shipped)
    threads: int = 0             # 0 = automatic
    maxMessageBytes: int = 64 << 20  # larger LSP messages are read through, dropped and answered with an error
    searchAllSymbols: bool = False   # every workspace/symbol query is a code search (else only `?query`)
    searchRanking: str = "auto"      # one of RANKINGS

    def model_key(self) -> tuple[str, str, str, int]:
        """What a model is loaded with: a change of any of these reloads it."""
        return self.model, self.device, self.modelPath, self.threads


DEFAULTS = Settings()

BOOLS = {"searchAllSymbols"}
CHOICES = {"model": MODELS, "device": DEVICES, "searchRanking": RANKINGS}

INT_RANGES = {
    "beamSize": (1, 16),
    "maxItems": (1, 50),
    "timeBudgetMs": (1, 60000),
    "threads": (0, 256),
    "maxMessageBytes": (1 << 10, 1 << 30),
}


def section_of(raw: Any) -> dict[str, Any] | None:
    """The settings object inside `raw`: either `{"anycode": {...}}` or the flat
    section itself.  None when `raw` holds no settings at all."""
    if not isinstance(raw, dict):
        return None
    inner = raw.get(SECTION)
    if isinstance(inner, dict):
        return inner
    known = {f.name for f in fields(Settings)}
    return raw if known & raw.keys() else None


def parse(*layers: Any) -> tuple[Settings, list[str]]:
    """Settings from raw layers (later layers win, key by key), with one warning
    per invalid value.  Unknown keys are ignored; a null value means the default."""
    merged: dict[str, Any] = {}
    for layer in layers:
        section = section_of(layer)
        if section:
            merged.update(section)
    values: dict[str, Any] = {}
    warnings: list[str] = []

    def bad(key: str, value: Any, expected: str) -> None:
        default = getattr(DEFAULTS, key)
        warnings.append(f"anycode.{key}: {value!r} is not {expected}; using the default {default!r}.")

    for key in (f.name for f in fields(Settings)):
        if key not in merged or merged[key] is None:
            continue
        value = merged[key]
        if key in CHOICES:
            if isinstance(value, str) and value.strip().lower() in CHOICES[key]:
                values[key] = value.strip().lower()
            else:
                bad(key, value, "one of " + ", ".join(CHOICES[key]))
        elif key in BOOLS:
            if isinstance(value, bool):
                values[key] = value
            else:
                bad(key, value, "true or false")
        elif key == "modelPath":
            if isinstance(value, str):
                values[key] = os.path.expanduser(value.strip()) if value.strip() else ""
            else:
                bad(key, value, "a path")
        else:
            lo, hi = INT_RANGES[key]
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
                values[key] = value
            else:
                bad(key, merged[key], f"an integer from {lo} to {hi}")
    return Settings(**values), warnings
