"""Grow the pinned corpus list (model/corpora/python.tsv) with more PyPI projects.

    python tools/curate_corpus.py --candidates pypi.tsv --cache data/corpus2/python/sdists \
        --log data/corpus2/curation.jsonl --new-projects 1150 --new-lines 31000000 --write

Candidates come from a local table of PyPI names (`--candidates`: a tab-separated file with a
header naming at least `name`, optionally `rank` columns such as
`rank_among_15000_most_downloaded`, and `summary`, `month`): first the projects whose summary
reads like scientific, numeric, teaching or script code (`VARIETY`, at most `--variety-max`),
then the others by download rank.  Nothing lists or guesses names on the registry: each
candidate is one lookup of its own JSON document (`https://pypi.org/pypi/NAME/json`), which
gives the latest version, the licence fields and the sdist with its sha256.

A candidate is taken when
  * its name is not excluded (`EXCLUDED_NAMES`: type stubs, generated cloud SDKs and API
    clients, binary or model-zoo packages) and its summary does not say the code is generated,
  * its licence is permissive (`license_of`: the PEP 639 expression, else the trove classifiers,
    else the licence field; every part must be MIT, MIT-0, BSD-2-Clause, BSD-3-Clause, 0BSD,
    Apache-2.0, ISC, PSF-2.0 or Unlicense; anything naming GPL, LGPL, AGPL, MPL or EUPL is out),
  * its latest release has an sdist of at most `MAX_SDIST_BYTES`, and
  * the sdist, downloaded into the corpus's cache (the fetch reuses it), holds at least
    `MIN_PY_LINES` lines of Python that the corpus filter keeps, more such lines than lines of
    compiled-language sources (C, C++, Cython, Rust, Go, Fortran, CUDA) and than lines of
    generated Python, and at most `MAX_PY_LINES`.
The new projects go to train (`--split` names another: a held-out list of its own, such as
model/corpora/python-scripts.tsv, with `--exclude-list` naming the corpus list whose projects it must
not hold).  Every decision is appended to `--log` (JSON lines) so a rerun continues where it
stopped; `--write` rewrites the list, sorted by name, with the new rows.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
import time
import urllib.error
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from anycode.model import corpus
from anycode.model.corpus import Pinned

ALLOWED = {"MIT", "MIT-0", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "Apache-2.0", "ISC", "PSF-2.0", "Unlicense"}
COPYLEFT = re.compile(r"\b(A?GPL|LGPL|GNU|MPL|Mozilla|EUPL|CDDL|EPL|Eclipse|SSPL|Commons Clause|proprietary|CC-BY-NC|"
                      r"BUSL|Business Source)\b", re.I)
MAX_SDIST_BYTES = 25 << 20
MIN_PY_LINES = 150
MAX_PY_LINES = 500_000
NATIVE_SUFFIXES = (".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".hxx", ".pyx", ".pxd", ".pxi", ".rs", ".go",
                   ".f", ".f90", ".f95", ".for", ".cu", ".cuh", ".m", ".mm", ".swift", ".zig", ".java")

# Families of generated code (cloud SDKs, API clients, stubs), binary-only or model-zoo packages.
EXCLUDED_NAMES = re.compile(
    r"^(types-|mypy-boto3|boto3-stubs|botocore-stubs|azure-mgmt-|azure-|google-cloud-|google-api|googleapis|"
    r"grpcio|proto-plus|protobuf|opentelemetry-(proto|exporter|semantic)|aws-cdk|cdktf|constructs|jsii|pulumi|"
    r"tree-sitter|nvidia-|cuda|cupy|tensorflow|tf-nightly|tensorboard|torch$|jax$|jaxlib|onnx|triton|pyobjc|huaweicloudsdk|"
    r"tencentcloud|alibabacloud|aliyun-|volcengine|oci$|kubernetes$|openapi-|swagger|transformers$|diffusers$|"
    r"timm$|sentence-transformers|vllm|xformers|flash-attn|mkl|intel-|pyqt|pyside|shiboken|qt|apache-beam|"
    r"pywin32|pypiwin32|comtypes|botocore$|boto3$|awscli$|ansible$|ansible-core$|msgraph|office365|"
    r"twilio$|stripe$|plaid|okta|hubspot|datadog-api-client|opsgenie|zenpy|facebook-business|google-ads|"
    r"bingads|ibm-|watson|oracledb|snowflake-connector|pyspark$|databricks-sdk|mlflow-skinny|mlflow-tracing|"
    r"google-(ai|analytics|apps|maps|shopping|ads|area120|geo|devtools)-|fhir)"
    r"|(-stubs|-binary|-bin|-nightly|-sdk-core|-api-client|-client-generated)$", re.I)
# Markers of generated code anywhere in a file's first `DEEP_HEADER_LINES` lines: deeper and wider than the
# corpus filter's (which keeps its rules so that dev and test stay as they are), for judging whole projects.
DEEP_GENERATED = re.compile(r"\b(generated (by|from|with|using)|do not edit|auto-?generated|automatically generated|"
                            r"openapi[- ]generator|swagger[- ]codegen|code generator)\b|@generated\b", re.I)
DEEP_HEADER_LINES = 30
MAX_GENERATED_SHARE = 0.3   # of the kept lines, in files with a deep marker
GENERATED_SUMMARY = re.compile(r"auto-?generated|generated (by|from|with)|openapi|swagger|type stubs|typing stubs|"
                               r"stub files|stubs for|protobuf definitions|bindings for the .* API", re.I)

# Summaries of projects unlike the usual library: science and numerics, teaching, scripts and small tools.
VARIETY = re.compile(
    r"\b(tutorial|course|teaching|textbook|lecture|lessons?|exercises|educational|students|homework|"
    r"numerical|numerics|scientific|simulation|simulator|astronomy|astrophysics|astropy|cosmology|physics|"
    r"chemistry|molecular|bioinformatics|genomics|neuroscience|seismolog|climate|meteorolog|hydrolog|"
    r"geophysic|ecology|statistics|statistical|econometric|finite element|optimization|solver|"
    r"differential equations|linear algebra|signal processing|spectroscopy|crystallograph|"
    r"scripts?|command[- ]line (tool|utility)|small tool|utility scripts)\b", re.I)

UNRANKED_MONTHS = ("2019-01", "2024-12")

CLASSIFIER_LICENSES = {
    "License :: OSI Approved :: MIT License": "MIT",
    "License :: OSI Approved :: MIT No Attribution License (MIT-0)": "MIT-0",
    "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: BSD License": "BSD",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
    "License :: OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "License :: OSI Approved :: Zero-Clause BSD (0BSD)": "0BSD",
    "License :: OSI Approved :: BSD Zero-Clause License": "0BSD",
    "License :: Public Domain": None,   # not a licence we can name: left out
}
# Short free-text licence fields, lower-cased, spaces and dashes squeezed.
TEXT_LICENSES = {
    "mit": "MIT", "mitlicense": "MIT", "themitlicense": "MIT", "mit0": "MIT-0", "expat": "MIT",
    "apache2.0": "Apache-2.0", "apache2": "Apache-2.0", "apachelicense2.0": "Apache-2.0",
    "apachelicenseversion2.0": "Apache-2.0", "apachesoftwarelicense": "Apache-2.0", "asl2.0": "Apache-2.0",
    "apachesoftwarelicense2.0": "Apache-2.0", "apache": "Apache-2.0", "apachelicense": "Apache-2.0",
    "bsd": "BSD", "bsdlicense": "BSD", "newbsd": "BSD-3-Clause", "bsd3clause": "BSD-3-Clause",
    "bsd3": "BSD-3-Clause", "3clausebsd": "BSD-3-Clause", "modifiedbsd": "BSD-3-Clause", "bsd2clause": "BSD-2-Clause",
    "simplifiedbsd": "BSD-2-Clause", "2clausebsd": "BSD-2-Clause", "bsd2": "BSD-2-Clause", "isc": "ISC",
    "isclicense": "ISC", "psf": "PSF-2.0", "psfl": "PSF-2.0", "psf2.0": "PSF-2.0", "unlicense": "Unlicense",
    "theunlicense": "Unlicense", "0bsd": "0BSD",
}
SPDX_ALIASES = {"BSD": "BSD", "Apache 2.0": "Apache-2.0", "Apache2": "Apache-2.0", "PSF": "PSF-2.0",
                "Python-2.0": "PSF-2.0"}


def _squeeze(text: str) -> str:
    return re.sub(r"[\s_\-()]+", "", text.lower())


def license_of(info: dict) -> tuple[str | None, str]:
    """(SPDX-like licence, where it came from) of a PyPI `info` block; None when not permissive
    or unknown.  "BSD" is left ambiguous for `bsd_variant` to settle from the licence file."""
    fields = " ".join(str(info.get(k) or "") for k in ("license_expression", "license")) + " " + \
        " ".join(c for c in info.get("classifiers") or [] if c.startswith("License"))
    if COPYLEFT.search(fields):
        return None, "copyleft or non-free licence named"
    expr = (info.get("license_expression") or "").strip()
    if expr:
        parts = [SPDX_ALIASES.get(t, t) for t in re.split(r"\s+(?:AND|OR|and|or)\s+|[()]", expr) if t.strip()]
        parts = [p.strip() for p in parts]
        if parts and all(p in ALLOWED or p == "BSD" for p in parts):
            return " AND ".join(dict.fromkeys(parts)) if " AND " in expr or " and " in expr else \
                " OR ".join(dict.fromkeys(parts)), "license_expression"
        return None, f"licence expression {expr!r}"
    found = {CLASSIFIER_LICENSES[c] for c in info.get("classifiers") or [] if c in CLASSIFIER_LICENSES}
    other = [c for c in info.get("classifiers") or [] if c.startswith("License ::") and c not in CLASSIFIER_LICENSES]
    if found and None not in found and not other:
        return " OR ".join(sorted(found)), "classifiers"
    if other or None in found:
        return None, f"classifiers {other or ['Public Domain']}"
    text = (info.get("license") or "").strip()
    if not text:
        return None, "no licence given"
    short = TEXT_LICENSES.get(_squeeze(text.splitlines()[0])[:40])
    if short:
        return short, "license field"
    body = text.lower()
    if "permission is hereby granted, free of charge" in body:
        return "MIT", "license field (text)"
    if "apache license" in body and "version 2.0" in body:
        return "Apache-2.0", "license field (text)"
    if "redistribution and use in source and binary forms" in body:
        return ("BSD-3-Clause" if "neither the name" in body or "endorse or promote" in body else "BSD-2-Clause"), \
            "license field (text)"
    return None, f"licence field {text[:60]!r}"


def bsd_variant(license_texts: list[str]) -> str | None:
    """BSD-3-Clause or BSD-2-Clause from the sdist's licence files; None if they do not say."""
    for text in license_texts:
        low = text.lower()
        if "redistribution and use in source and binary forms" in low:
            return "BSD-3-Clause" if ("neither the name" in low or "endorse or promote" in low) else "BSD-2-Clause"
    return None


def inspect_archive(archive: Path) -> dict:
    """Line counts of an sdist as the corpus filter sees it, and its licence files."""
    kept = generated = generated_kept = native = files = 0
    licences: list[str] = []
    for member, size, read in corpus.iter_archive(archive):
        rel = corpus.inner_path(member)
        if rel is None:
            continue
        name = PurePosixPath(rel).name.lower()
        if rel.count("/") <= 1 and name.split(".")[0] in ("license", "licence", "copying", "license-bsd"):
            if size < 200_000:
                licences.append(read().decode("utf8", "replace"))
            continue
        if name.endswith(NATIVE_SUFFIXES) and size < corpus.MAX_FILE_BYTES:
            native += corpus.count_lines(read())
            continue
        if not name.endswith(".py"):
            continue
        reason = corpus.path_skip_reason(rel)
        if reason not in (None, "generated"):
            continue
        data = read() if size <= corpus.MAX_FILE_BYTES else b""
        reason = reason or corpus.content_skip_reason(data)
        if reason == "generated":
            generated += corpus.count_lines(data)
        elif reason is None:
            n = corpus.count_lines(data)
            kept += n
            files += 1
            head = b"\n".join(data.split(b"\n", DEEP_HEADER_LINES)[:DEEP_HEADER_LINES]).decode("utf8", "replace")
            if DEEP_GENERATED.search(head):
                generated_kept += n
    return {"py_lines": kept, "py_files": files, "generated_lines": generated, "generated_kept_lines": generated_kept,
            "native_lines": native,
            "licences": licences}


def content_verdict(stats: dict, max_lines: int = MAX_PY_LINES) -> str | None:
    if stats["py_lines"] < MIN_PY_LINES:
        return f"too little Python ({stats['py_lines']} lines)"
    if stats["native_lines"] > stats["py_lines"]:
        return f"mostly compiled-language code ({stats['native_lines']} lines against {stats['py_lines']})"
    if stats["generated_lines"] > stats["py_lines"]:
        return f"mostly generated ({stats['generated_lines']} lines against {stats['py_lines']})"
    if stats.get("generated_kept_lines", 0) > MAX_GENERATED_SHARE * stats["py_lines"]:
        return f"mostly generated ({stats['generated_kept_lines']} of {stats['py_lines']} lines marked so in their header)"
    if stats["py_lines"] > max_lines:
        return f"huge ({stats['py_lines']} lines)"
    return None


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def judge(name: str, summary: str, cache: Path, max_lines: int = MAX_PY_LINES) -> dict:
    """Take or leave one candidate: {"name", "ok", "reason", and when ok the pinned fields}."""
    out = {"name": name, "ok": False}
    if EXCLUDED_NAMES.search(name):
        return {**out, "reason": "excluded name"}
    if GENERATED_SUMMARY.search(summary or ""):
        return {**out, "reason": "summary says generated or stubs"}
    try:
        doc = json.loads(corpus._http_get(f"{corpus.PYPI_JSON}/{urllib.parse.quote(name)}/json"))
    except urllib.error.HTTPError as e:
        return {**out, "reason": f"PyPI: HTTP {e.code}"}
    except Exception as e:  # noqa: BLE001 - a network error leaves this one out, not the run
        return {**out, "reason": f"PyPI: {type(e).__name__}: {e}", "retry": True}
    info = doc.get("info") or {}
    if GENERATED_SUMMARY.search(info.get("summary") or ""):
        return {**out, "reason": "summary says generated or stubs"}
    licence, source = license_of(info)
    if licence is None:
        return {**out, "reason": f"licence: {source}"}
    version = info.get("version") or ""
    sdists = [f for f in doc.get("urls") or [] if f.get("packagetype") == "sdist" and not f.get("yanked")]
    if not sdists:
        return {**out, "reason": "no sdist"}
    sd = sdists[0]
    if sd.get("size", 0) > MAX_SDIST_BYTES:
        return {**out, "reason": f"sdist of {sd['size'] >> 20} MB"}
    try:
        suffix = corpus.archive_suffix(sd["filename"])
    except corpus.FetchError as e:
        return {**out, "reason": str(e)}
    pin = Pinned(name, version, licence, sd["digests"]["sha256"], "train")
    try:
        archive = corpus.download(pin, cache)
    except Exception as e:  # noqa: BLE001
        return {**out, "reason": f"download: {type(e).__name__}: {e}", "retry": True}
    try:
        stats = inspect_archive(archive)
    except Exception as e:  # noqa: BLE001 - a corrupt archive
        archive.unlink(missing_ok=True)
        return {**out, "reason": f"unreadable sdist: {type(e).__name__}: {e}"}
    verdict = content_verdict(stats, max_lines)
    if verdict is None and "BSD" in licence.split(" OR ") + licence.split(" AND "):
        variant = bsd_variant(stats["licences"])
        if variant is None:
            verdict = "BSD licence of unknown variant"
        else:
            licence = re.sub(r"\bBSD\b(?!-)", variant, licence)
    facts = {k: stats[k] for k in ("py_lines", "py_files", "generated_lines", "generated_kept_lines", "native_lines")}
    if verdict:
        archive.unlink(missing_ok=True)   # keep the cache to what the list uses
        return {**out, "reason": verdict, **facts}
    return {"name": pin.name, "ok": True, "version": pin.version, "license": licence, "sha256": pin.sha256,
            "license_source": source, **facts}


def recheck(d: dict, cache: Path, candidates: set[str]) -> dict:
    """Judge a project taken earlier again under the current candidates, name and content rules,
    from its cached sdist (no network): the same decision, or a rejection that replaces it."""
    archive = corpus.cached_archive(cache, Pinned(d["name"], d["version"], d["license"], d["sha256"]))
    if canonical(d["name"]) not in candidates or EXCLUDED_NAMES.search(d["name"]):
        verdict, stats = ("no longer a candidate" if canonical(d["name"]) not in candidates else "excluded name"), {}
        if archive is not None:
            archive.unlink()
    else:
        if archive is None:
            return {**d, "reason": "recheck: sdist not cached", "retry": True, "ok": False}
        stats = inspect_archive(archive)
        verdict = content_verdict(stats)
        if verdict:
            archive.unlink()
    if verdict is None:
        return d
    facts = {k: v for k, v in stats.items() if k != "licences"}
    return {"name": d["name"], "ok": False, "reason": verdict, "recheck": True, **facts}


def read_candidates(path: Path, variety_max: int) -> list[tuple[str, str]]:
    """(name, summary) in the order they are tried: variety first, then by download rank."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rank_col = next((c for c in rows[0] if c.startswith("rank")), None) if rows else None

    def rank(r):
        try:
            return int(r.get(rank_col) or "")
        except ValueError:
            return None

    ranked = sorted((r for r in rows if rank(r) is not None), key=rank)
    variety = [r for r in ranked if VARIETY.search(r.get("summary") or "")]
    # less downloaded ones last released in 2019-2024 (older ones rarely build today, newer ones are often
    # days old), in an order that favours no part of the alphabet
    unranked = sorted((r for r in rows if rank(r) is None and UNRANKED_MONTHS[0] <= (r.get("month") or "") <= UNRANKED_MONTHS[1]
                       and VARIETY.search(r.get("summary") or "")),
                      key=lambda r: hashlib.sha1(canonical(r["name"]).encode()).hexdigest())
    order = (variety + unranked)[:variety_max] + ranked
    seen, out = set(), []
    for r in order:
        key = canonical(r["name"])
        if key not in seen:
            seen.add(key)
            out.append((r["name"], r.get("summary") or ""))
    return out


def write_list(path: Path, pinned: list[Pinned]) -> None:
    rows = ["\t".join(corpus.HEADER_WITH_SPLIT)]
    rows += ["\t".join((p.name, p.version, p.license, p.sha256, p.split))
             for p in sorted(pinned, key=lambda p: p.name.lower())]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=Path, required=True, help="tab-separated names (name, rank..., summary)")
    ap.add_argument("--list", type=Path, default=corpus.pinned_list_path("python"))
    ap.add_argument("--cache", type=Path, required=True, help="the corpus's sdist cache, e.g. data/corpus2/python/sdists")
    ap.add_argument("--log", type=Path, required=True, help="decisions, one JSON line each (a rerun continues)")
    ap.add_argument("--new-projects", type=int, default=1150, help="stop after this many new projects ...")
    ap.add_argument("--new-lines", type=int, default=31_000_000, help="... and this many new kept lines")
    ap.add_argument("--variety-max", type=int, default=900)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--write", action="store_true", help="rewrite --list with the taken projects")
    ap.add_argument("--recheck", action="store_true", help="first judge the projects taken earlier again")
    ap.add_argument("--split", default="train", choices=corpus.SPLITS, help="the split the new projects get")
    ap.add_argument("--exclude-list", type=Path, action="append", default=[],
                    help="a pinned list whose projects are never taken (the corpus's, for a held-out list)")
    ap.add_argument("--max-lines", type=int, default=MAX_PY_LINES, help="leave out projects with more kept lines")
    args = ap.parse_args(argv)

    pinned = corpus.read_pinned(args.list)
    excluded = {canonical(p.name) for f in args.exclude_list for p in corpus.read_pinned(f)}
    known = {canonical(p.name) for p in pinned} | excluded
    decided: dict[str, dict] = {}
    if args.log.exists():
        for line in args.log.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if not d.get("retry"):
                decided[canonical(d["name"])] = d
    args.cache.mkdir(parents=True, exist_ok=True)
    candidates = read_candidates(args.candidates, args.variety_max)
    taken = [d for d in decided.values() if d["ok"]]
    if args.recheck:
        names = {canonical(n) for n, _ in candidates}
        with open(args.log, "a", encoding="utf-8") as log, ThreadPoolExecutor(args.jobs) as pool:
            again = list(pool.map(lambda d: recheck(d, args.cache, names), taken))
            for d in again:
                if not d["ok"]:
                    log.write(json.dumps(d) + "\n")
                    decided[canonical(d["name"])] = d
                    pinned = [p for p in pinned if canonical(p.name) != canonical(d["name"])]
        dropped = [d for d in again if not d["ok"]]
        print(f"recheck: {len(dropped)} of {len(taken)} taken projects left out now", file=sys.stderr)
        taken = [d for d in again if d["ok"]]
        known = {canonical(p.name) for p in pinned} | excluded
    todo = [(n, s) for n, s in candidates if canonical(n) not in known and canonical(n) not in decided]

    def done() -> bool:
        return len(taken) >= args.new_projects and sum(d["py_lines"] for d in taken) >= args.new_lines

    with open(args.log, "a", encoding="utf-8") as log, ThreadPoolExecutor(args.jobs) as pool:
        start = time.time()
        for i in range(0, len(todo), 4 * args.jobs):
            if done():
                break
            batch = todo[i: i + 4 * args.jobs]
            for d in pool.map(lambda ns: judge(ns[0], ns[1], args.cache, args.max_lines), batch):
                log.write(json.dumps(d) + "\n")
                if d["ok"] and canonical(d["name"]) not in known:
                    known.add(canonical(d["name"]))
                    taken.append(d)
            log.flush()
            print(f"[{time.time() - start:6.0f}s] tried {i + len(batch)}, taken {len(taken)}, "
                  f"{sum(d['py_lines'] for d in taken):,} lines", file=sys.stderr, flush=True)
    print(f"taken {len(taken)} new projects, {sum(d['py_lines'] for d in taken):,} kept lines before dedup")
    if args.write:
        new = [Pinned(d["name"], d["version"], d["license"], d["sha256"], args.split) for d in taken]
        write_list(args.list, pinned + [p for p in new if canonical(p.name) not in {canonical(q.name) for q in pinned}])
        print(f"wrote {args.list}")
    return 0 if done() else 1


if __name__ == "__main__":
    sys.exit(main())
