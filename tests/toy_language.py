"""A second language for the tests of the language interface: Python's parser and printer under
another id, with rules of its own, so that a test fails wherever model/ or server/ would use
Python's rules instead of the Language they are given.

* a hole's root (a dataset target, a search's answer) is a call or an attribute read, nothing else;
* a return statement's value is no hole.

It is registered in the test process with `anycode.grammars.register(TOY)`, and in a server process
through ANYCODE_LANGUAGES=toy_language:TOY (tests/ on PYTHONPATH).
"""
from __future__ import annotations

from anycode.grammars import base_type
from anycode.grammars.python import Python

TOY_ROOTS = frozenset({"call", "attribute"})


class ToyPython(Python):
    id = "toypy"
    language_ids = frozenset({"toypy"})
    extensions = (".toypy",)
    corpus = ""
    HOLE_FORBIDDEN = Python.HOLE_FORBIDDEN | {("return_statement", "")}

    def target_root_type(self, type_key: str) -> bool:
        return base_type(type_key) in TOY_ROOTS


TOY = ToyPython()
