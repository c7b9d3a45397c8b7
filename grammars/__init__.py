"""The languages anycode knows, by id: the registry (the only place that names a language).

    lang = grammars.get("python")                  # by the id a model directory records
    lang = grammars.for_language_id("python", uri)  # by an editor's languageId (else the file suffix)
    lang = grammars.of_model(model_dir)            # the language a model directory was trained on
    grammars.register(MyLanguage())                # a language defined elsewhere (a test, a plugin)

Built-in languages are imported when first asked for.  Languages defined outside the package are
named in the environment variable ANYCODE_LANGUAGES ("module:attribute,...", each attribute a
`Language`), registered at the first lookup, so that a server process knows them too.  A model
directory records its language as "language" in config.json (and manifest.json); one without it
predates the field and is Python.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

from anycode.grammars.language import Language, Node, Unprintable, base_type

__all__ = ["Language", "Node", "Unprintable", "base_type", "DEFAULT", "get", "register", "for_language_id", "of_model",
           "of_config", "ids"]

DEFAULT = "python"
"""The language of a model directory (or dataset) that records none."""

_BUILTIN = {"python": ("anycode.grammars.python", "PYTHON")}   # the language table: id -> (module, instance)
_REGISTERED: dict[str, Language] = {}
PLUGINS_ENV = "ANYCODE_LANGUAGES"
_plugins_loaded = False


def _load_plugins() -> None:
    """Register the languages ANYCODE_LANGUAGES names (once); one that does not load is logged and skipped."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for spec in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        module, _, attr = spec.partition(":")
        try:
            lang = getattr(importlib.import_module(module), attr)
            if not isinstance(lang, Language):
                raise TypeError(f"{attr} is a {type(lang).__name__}, not a Language")
            register(lang)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the server down
            logging.getLogger("anycode.grammars").warning("%s=%s: %s cannot be loaded: %r", PLUGINS_ENV,
                                                          os.environ.get(PLUGINS_ENV), spec, exc)


def register(lang: Language) -> Language:
    """Make `lang` known by its id (replacing one of the same id)."""
    if not lang.id:
        raise ValueError("a language needs an id")
    _REGISTERED[lang.id] = lang
    return lang


def unregister(lang_id: str) -> None:
    _REGISTERED.pop(lang_id, None)


def get(lang_id: str) -> Language:
    """The language of this id; KeyError names the known ones."""
    _load_plugins()
    lang = _REGISTERED.get(lang_id)
    if lang is None and lang_id in _BUILTIN:
        module, name = _BUILTIN[lang_id]
        lang = register(getattr(importlib.import_module(module), name))
    if lang is None:
        raise KeyError(f"no language {lang_id!r} (known: {', '.join(ids())})")
    return lang


def ids() -> list[str]:
    _load_plugins()
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def for_language_id(language_id: str | None, uri: str = "") -> Language | None:
    """The language of an editor's document: by its LSP languageId, else (none sent) by the file
    suffix of its uri; None when no known language has it."""
    key = (language_id or "").lower()
    langs = [get(i) for i in ids()]
    if key:
        return next((g for g in langs if key in g.language_ids or key == g.id), None)
    low = uri.lower()
    return next((g for g in langs if g.extensions and low.endswith(g.extensions)), None)


def of_config(conf: dict) -> Language:
    """The language a model's config.json (or manifest.json) records; DEFAULT when it records none."""
    return get(conf.get("language") or DEFAULT)


def of_model(directory: str | Path) -> Language:
    """The language of a model, run or dataset directory: "language" in its config.json, else in its
    manifest.json, else DEFAULT."""
    directory = Path(directory)
    for name in ("config.json", "manifest.json"):
        f = directory / name
        if f.exists():
            try:
                conf = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(conf, dict) and conf.get("language"):
                return get(conf["language"])
    return get(DEFAULT)
