"""A class run's students take turns on a shared host or account (run/turns.py): never two at
once on one, side by side on different ones, ``parallel`` at most, and none after Ctrl-C."""

from __future__ import annotations

import threading
from collections.abc import Hashable

from labrunner.run.turns import take_turns


class Record:
    def __init__(self, needs: list[frozenset[Hashable]]) -> None:
        self.needs = needs
        self.lock = threading.Lock()
        self.using: dict[Hashable, int] = {}
        self.running = 0
        self.most = 0
        self.clashes: list[tuple[int, Hashable]] = []
        self.done: list[int] = []

    def enter(self, i: int) -> None:
        with self.lock:
            for thing in self.needs[i]:
                if thing in self.using:
                    self.clashes.append((i, thing))
                self.using[thing] = i
            self.running += 1
            self.most = max(self.most, self.running)

    def leave(self, i: int) -> None:
        with self.lock:
            for thing in self.needs[i]:
                self.using.pop(thing, None)
            self.running -= 1
            self.done.append(i)


def run(needs: list[frozenset[Hashable]], parallel: int, work) -> None:  # type: ignore[no-untyped-def]
    for t in take_turns(needs, parallel, work, threading.Event()):
        t.join(60)
        assert not t.is_alive()


def test_thirty_students_on_ten_hosts_never_share_one_at_once() -> None:
    needs = [frozenset({("host", i % 10), ("account", i)}) for i in range(30)]
    rec = Record(needs)

    def work(i: int) -> None:
        rec.enter(i)
        for _ in range(200):  # give the others every chance to clash
            threading.Event().wait(0.0005)
        rec.leave(i)

    run(needs, 8, work)
    assert sorted(rec.done) == list(range(30))
    assert rec.clashes == []
    assert 1 < rec.most <= 8


def test_students_on_different_hosts_run_side_by_side() -> None:
    # Both must be inside at once to pass the barrier: run one after the other, it breaks.
    needs = [frozenset({"ecs"}), frozenset({"ecs"}), frozenset({"ecs2"})]
    barrier = threading.Barrier(2, timeout=30)
    met: list[int] = []

    def work(i: int) -> None:
        if i in (0, 2):
            barrier.wait()
            met.append(i)

    run(needs, 2, work)
    assert sorted(met) == [0, 2]


def test_a_shared_account_waits_like_a_shared_host() -> None:
    needs = [frozenset({"ecs", "student@"}), frozenset({"ecs2", "student@"})]
    rec = Record(needs)

    def work(i: int) -> None:
        rec.enter(i)
        threading.Event().wait(0.05)
        rec.leave(i)

    run(needs, 2, work)
    assert rec.clashes == [] and rec.most == 1


def test_nobody_starts_once_stopped() -> None:
    stop = threading.Event()
    started: list[int] = []

    def work(i: int) -> None:
        started.append(i)
        stop.set()  # Ctrl-C during the first student

    for t in take_turns([frozenset({"ecs"})] * 5, 2, work, stop):
        t.join(60)
    assert started == [0]
