"""CPython's false ``SystemError`` of the AST constructor, made to happen on purpose.

Up to 3.12 a parse nested inside another (here: in a garbage-collector finalizer, as
pytest's unraisable-exception hook does when it formats a traceback) makes the outer
one raise ``AST constructor recursion depth mismatch`` (python/cpython#106905).
"""

from __future__ import annotations

import ast
import gc
from collections.abc import Callable
from typing import Any


class _ParsesWhenCollected:
    def __init__(self) -> None:
        self.cycle = self  # freed only by the garbage collector, in the middle of a parse

    def __del__(self) -> None:
        ast.parse("x = 1\n" * 20)


def failures_under_nested_parses(parse: Callable[[], Any], rounds: int = 20) -> int:
    """How many of ``rounds`` calls of ``parse`` raised ``SystemError`` while collections
    ran finalizers that parse."""
    failures = 0
    threshold = gc.get_threshold()
    gc.set_threshold(50)  # collect often: during the parse
    try:
        for _ in range(rounds):
            for _ in range(20):
                _ParsesWhenCollected()
            try:
                parse()
            except SystemError:
                failures += 1
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    return failures
