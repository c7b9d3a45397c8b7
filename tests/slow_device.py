"""Completer factories for `anycode serve --completer slow_device:NAME`: the real runtime
and model, loaded after a delay as long as a GPU load (float graphs converted, CUDA graphs
captured), with the quick CPU completer the server answers from meanwhile.  CI has no GPU; this
is how the tests see the server through such a load."""
from __future__ import annotations

import os
import time

from anycode.model import runtime

LOAD_SECONDS = float(os.environ.get("ANYCODE_SLOW_LOAD_SECONDS", "4"))


def _interim(s):
    return runtime.Completer(model_dir=s.modelPath or None, device="cpu", threads=s.threads)


def make_completer(s):
    time.sleep(LOAD_SECONDS)
    completer = _interim(s)
    completer.device = "slow-device"          # so that the status shows which one answers
    return completer


make_completer.interim = _interim


def make_slow_cpu(s):
    """A load on the CPU that takes longer than a request's time budget (a cold disk, a slow
    machine), with nothing to answer from meanwhile."""
    time.sleep(LOAD_SECONDS)
    return _interim(s)


def make_cpu_fallback(s):
    """A GPU load that ends on the CPU after all (a CUDA provider but no usable GPU): the slow CPU
    load, with the interim CPU completer answering meanwhile."""
    return make_slow_cpu(s)


make_cpu_fallback.interim = _interim
