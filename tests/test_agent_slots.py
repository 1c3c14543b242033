"""Heartbeat slots shared between real processes: taken by pid, read from outside, reclaimed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lifesigns.agent.slots import SlotsFull, SlotTable

SRC = str(Path(__file__).resolve().parents[1] / "src")

WORKER = textwrap.dedent(
    """
    import sys, time
    from lifesigns.agent.slots import SlotTable
    table = SlotTable.open(sys.argv[1])
    slot = table.take()
    slot.publish(phase="ready", ready=True, request="GET /orders/{id}", request_ns=1)
    print(slot.index, flush=True)
    beats = sys.argv[2] == "beat"
    while True:
        if beats:
            slot.beat(time.monotonic_ns())
        time.sleep(0.01)
    """
)


def _spawn(path: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip().isdigit(), f"the worker did not take a slot: {line!r}"
    return process, int(line)


def _stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        process.kill()
        process.wait(10)


def _poll(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_two_workers_take_two_slots_and_their_beats_are_read_from_outside(tmp_path):
    table = SlotTable.create(tmp_path / "slots", 8)
    beating, first = _spawn(table.path, "beat")
    silent, second = _spawn(table.path, "silent")
    try:
        assert first != second
        held = {view.pid: view for view in table.held()}
        assert set(held) == {beating.pid, silent.pid}
        assert held[beating.pid].request == "GET /orders/{id}"
        assert held[beating.pid].phase == "ready" and held[beating.pid].ready
        # The silent one only beat when it took the slot: it ages; the other stays young.
        assert _poll(lambda: table.read(second).age() > 0.3)  # type: ignore[union-attr]
        beating_view = table.read(first)
        assert beating_view is not None and beating_view.age() < 0.3
    finally:
        _stop(beating, silent)


def test_a_killed_workers_slot_is_reclaimed(tmp_path):
    table = SlotTable.create(tmp_path / "slots", 1)
    first, index = _spawn(table.path, "beat")
    with pytest.raises(SlotsFull, match="1 slots"):
        table.take(pid=os.getpid())
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    # The next worker gets the dead one's slot, with a new generation.
    before = table.read(index)
    assert before is not None
    second, again = _spawn(table.path, "beat")
    try:
        assert again == index
        after = table.read(index)
        assert after is not None and after.pid == second.pid
        assert after.generation == before.generation + 1
    finally:
        _stop(second)
    assert table.reclaim() == [index]
    assert table.held() == []


def test_the_same_pid_keeps_its_slot_and_frees_it(tmp_path):
    table = SlotTable.create(tmp_path / "slots", 4)
    slot = table.take()
    assert table.take().index == slot.index
    assert slot.free()
    assert not slot.free()  # freed already: nothing to give back
    assert table.read(slot.index) is None


def test_a_reader_never_sees_half_of_one_request_and_half_of_another(tmp_path):
    table = SlotTable.create(tmp_path / "slots", 2)
    writer_code = textwrap.dedent(
        """
        import sys, time
        from lifesigns.agent.slots import SlotTable
        slot = SlotTable.open(sys.argv[1]).take()
        slot.publish(phase="ready", ready=True, request="B" * 120, request_ns=0)
        print(slot.index, flush=True)  # only now may the reader look
        n = 0
        while True:
            n += 1
            text = ("A" if n % 2 else "B") * 120
            slot.publish(phase="ready", ready=True, request=text, request_ns=n)
            if not n % 8:
                # A worker publishes per request, not in a tight loop: without a pause
                # a reader on a busy machine may find no quiet moment in 1.5 s at all.
                time.sleep(0.0002)
        """
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", writer_code, str(table.path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert writer.stdout is not None
    index = int(writer.stdout.readline())
    try:
        seen: set[str] = set()
        reads = 0
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (reads < 2000 or len(seen) < 2):
            reads += 1
            view = table.read(index)
            assert view is not None
            assert set(view.request) <= {"A"} or set(view.request) <= {"B"}, view.request
            # Odd numbers go with "A": a torn read would pair them wrongly.
            assert (view.request_ns % 2 == 1) == view.request.startswith("A")
            seen.add(view.request[0])
        assert seen == {"A", "B"}
    finally:
        _stop(writer)


def test_opening_something_else_names_the_file(tmp_path):
    bogus = tmp_path / "not-slots"
    bogus.write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="not a version-2 lifesigns slots file"):
        SlotTable.open(bogus)
    with pytest.raises(ValueError, match="out of range"):
        SlotTable.create(tmp_path / "s", 0)
