"""The container census and retainer naming, in process, on real containers.

Each retainer kind of issue 11 grows between censuses; the census must name it with its
qualified name and the insert line must be the line of ``tests/leaky/caches.py`` that adds
to it. No mocks: real modules, real bytecode, real tracemalloc.
"""

from __future__ import annotations

import linecache
import tracemalloc
from collections.abc import Callable

import pytest

from lifesigns.memory.containers import ContainerCensus, deep_size
from lifesigns.memory.native import malloc_stats
from lifesigns.memory.retainers import find_insert_sites, name_retainers
from tests.leaky import caches


def _is_leaky(filename: str) -> bool:
    return filename.replace("\\", "/").endswith("tests/leaky/caches.py")


def _line_of(text: str) -> int:
    lines = linecache.getlines(caches.__file__)
    return next(n for n, line in enumerate(lines, 1) if text in line)


CASES: list[tuple[str, Callable[[int], object], str, str]] = [
    (
        "tests.leaky.caches._store",
        lambda i: caches.remember(f"k{i}"),
        "_store[key] = payload",
        "module global",
    ),
    (
        "tests.leaky.caches.AuditLog.entries",
        lambda i: caches.AuditLog.record(f"k{i}"),
        "cls.entries.append",
        "class attribute",
    ),
    (
        "tests.leaky.caches.record_in_closure.<closure seen>",
        lambda i: caches.record_in_closure(f"k{i}"),
        "seen.append",
        "closure cell",
    ),
    (
        "tests.leaky.caches.render",
        lambda i: caches.render(f"k{i}"),
        "@functools.cache",
        "lru_cache",
    ),
    (
        "app.state.reports",
        lambda i: caches.keep_report(f"k{i}"),
        "state.reports.append",
        "app.state",
    ),
]


@pytest.mark.parametrize(("name", "grow", "insert_text", "kind"), CASES, ids=[c[3] for c in CASES])
def test_each_retainer_kind_is_named_with_its_insert_line(name, grow, insert_text, kind):
    census = ContainerCensus(is_app_file=_is_leaky, budget=2.0)
    census.add_root("app.state", lambda: caches.state)
    counter = iter(range(10**9))
    for _ in range(4):
        for _ in range(200):
            grow(next(counter))
        census.take()
    growing = census.growing()
    names = [g.name for g in growing]
    assert name in names, names
    growth = next(g for g in growing if g.name == name)
    assert growth.kind == kind
    assert growth.entries_per_min > 0
    assert growth.length >= 800
    if kind == "lru_cache":
        assert growth.unbounded
    tracemalloc.start(16)
    try:
        for _ in range(50):
            grow(next(counter))
        (retainer,) = name_retainers([growth], census.find, is_app_file=_is_leaky, top=1)
    finally:
        tracemalloc.stop()
    assert retainer.insert is not None, retainer
    assert retainer.insert.lineno == _line_of(insert_text)
    assert retainer.insert.filename == caches.__file__
    text = retainer.describe()
    assert name in text and f"caches.py:{_line_of(insert_text)}" in text
    if kind != "lru_cache":
        # The entries were made by build_payload: named as where they were allocated.
        assert (
            retainer.allocated_at
            and f"caches.py:{_line_of('encode()[:size]')}" in retainer.allocated_at[0]
        )


def test_a_stable_container_is_not_growing():
    census = ContainerCensus(is_app_file=_is_leaky)
    for i in range(500):
        caches.remember(f"stable{i}")
    for _ in range(4):
        for i in range(500):
            caches.remember(f"stable{i}")  # same keys: the dict does not grow
        census.take()
    assert "tests.leaky.caches._store" not in [g.name for g in census.growing()]
    assert "tests.leaky.caches._store" in [g.name for g in census.largest(50)]


def test_deep_size_counts_the_entries():
    data = {f"k{i}": b"x" * 10_000 for i in range(1000)}
    size = deep_size(data)
    assert 9_000_000 < size < 12_000_000


def test_insert_sites_ignore_reads():
    sites = find_insert_sites("tests.leaky.caches._store", is_app_file=_is_leaky)
    assert [s.lineno for s in sites] == [_line_of("_store[key] = payload")]


def test_malloc_stats_read_glibc():
    stats = malloc_stats()
    assert stats is not None  # Debian's glibc 2.36 has mallinfo2
    assert stats.in_use > 0 and stats.threads >= 1
