"""A class run's students take turns on a shared host or account (run/turns.py): never two at
once on one, side by side on different ones, ``parallel`` at most, and none after Ctrl-C."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import pytest

from labrunner.config.model import TargetSpec
from labrunner.run.turns import host_needs, take_turns


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


BOUND = 30  # seconds: a bound for a wait that ends at once when the code is right, never a measure


def test_a_student_whose_host_is_held_gives_its_place_to_those_whose_hosts_are_free() -> None:
    """Finding 5: two places; student 0's host is held by another run until both others are
    done. It must not wait with its place taken (the class stalled up to 30 min): it gives the
    place back and is tried again later, so 1 and 2 run meanwhile, side by side."""
    needs = [frozenset({"ecs"}), frozenset({"ecs2"}), frozenset({"ecs3"})]
    released = threading.Event()  # the other run ends: student 0's host is free
    both_in = threading.Barrier(2, timeout=BOUND)  # 1 and 2 at once: only with 0's place given back
    lock = threading.Lock()
    done: list[int] = []
    tries: list[bool] = []  # student 0's: whether its host was free

    def work(i: int) -> float | None:
        if i == 0:
            tries.append(released.is_set())
            if not released.is_set():
                return time.monotonic() + 0.01  # held: again a little later
        else:
            both_in.wait()
        with lock:
            done.append(i)
            if sorted(done) == [1, 2]:
                released.set()
        return None

    run(needs, 2, work)
    assert done == [1, 2, 0] or done == [2, 1, 0]
    assert tries[0] is False and tries[-1] is True and tries.count(True) == 1


def test_stop_ends_the_wait_of_a_student_whose_host_is_held() -> None:
    """Ctrl-C while a student waits in the queue for its host (tried again in an hour here):
    the class run's threads end at once, and nobody starts any more."""
    stop = threading.Event()
    tried = threading.Event()
    started: list[int] = []

    def work(i: int) -> float | None:
        started.append(i)
        tried.set()
        return time.monotonic() + 3600  # not before its time: never again here

    threads = take_turns([frozenset({"ecs"}), frozenset({"ecs"})], 2, work, stop)
    assert tried.wait(BOUND)
    stop.set()
    for t in threads:
        t.join(BOUND)
        assert not t.is_alive()
    assert started in ([0], [0, 1])  # 1 may have started before the stop; none again after


# --- one host, whatever names it (turns.host_needs) -------------------------------------------


def meet(*hosts: str | TargetSpec, **options: Any) -> bool:
    """Whether a class run's students on these targets take turns (their host needs meet)."""
    targets = [h if isinstance(h, TargetSpec) else TargetSpec(host=h) for h in hosts]
    needs = host_needs(targets, **options)
    return all(needs[0] & other for other in needs[1:])


@pytest.fixture
def no_ssh_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder of our own: the tests' ~/.ssh/config, not the user's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    return tmp_path / ".ssh" / "config"


def test_an_address_and_a_name_of_it_are_one_host(no_ssh_config: Path) -> None:
    assert meet("127.0.0.1", "localhost")  # resolved here, from this machine's /etc/hosts
    assert meet("localhost", "LOCALHOST")


def test_spellings_of_one_address_are_one_host(no_ssh_config: Path) -> None:
    assert meet("2001:db8::1", "2001:DB8:0:0:0:0:0:1", " 2001:0db8::0001")
    assert meet("10.0.0.3", "::ffff:10.0.0.3", "::FFFF:a00:3")
    assert meet("127.0.0.1", "::1", "127.0.0.2")  # loopback: this machine, all of them
    assert not meet("10.0.0.3", "10.0.0.4")
    assert not meet("10.0.0.3", TargetSpec(host="10.0.0.3", port=2222))  # a port forward elsewhere


def test_an_ssh_config_alias_is_the_host_it_names(no_ssh_config: Path) -> None:
    no_ssh_config.write_text("Host lab3\n  HostName 10.0.0.3\n\nHost lab3b\n  HostName ::ffff:10.0.0.3\n"
                             "\nHost lab3c\n  HostName 10.0.0.3\n  Port 2222\n")
    assert meet("lab3", "10.0.0.3", "lab3b")
    assert not meet("lab3", "lab3c")  # its Port counts too
    assert meet("lab3c", TargetSpec(host="10.0.0.3", port=2222))


def test_a_name_behind_a_jump_host_is_not_resolved_here(no_ssh_config: Path) -> None:
    asked: list[str] = []

    def resolve(name: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        asked.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", port))]

    no_ssh_config.write_text("Host inner\n  HostName inner.lab\n  ProxyJump gate.example\n")
    needs = host_needs([TargetSpec(host="inner"), TargetSpec(host="db.lab", proxy_jump="gate.example")],
                       resolve=resolve)
    assert needs == [frozenset({("host", "inner.lab", 22)}), frozenset({("host", "db.lab", 22)})]
    assert asked == []


def test_a_name_that_does_not_resolve_keys_on_its_text(no_ssh_config: Path) -> None:
    needs = host_needs([TargetSpec(host="No-Such-Host.invalid."), TargetSpec(host="no-such-host.invalid")])
    assert needs[0] == needs[1] == frozenset({("host", "no-such-host.invalid", 22)})
    assert host_needs([None]) == [frozenset()]  # a student whose profile could not be made


def test_a_resolver_that_hangs_is_given_up_and_its_name_keys_on_its_text(no_ssh_config: Path) -> None:
    """A dead DNS server (the one fault made up here: it cannot be produced for real) costs the
    class run the timeout, once for all names, and no student."""
    release = threading.Event()

    def resolve(name: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        if name == "slow.lab":
            release.wait(60)  # had host_needs waited for it, it would have this address
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.3", port))]

    try:
        needs = host_needs([TargetSpec(host="slow.lab"), TargetSpec(host="fast.lab"), TargetSpec(host="10.0.0.3")],
                           timeout=0.3, resolve=resolve)
    finally:
        release.set()
    assert needs == [frozenset({("host", "slow.lab", 22)}), frozenset({("host", "10.0.0.3", 22)}),
                     frozenset({("host", "10.0.0.3", 22)})]


@pytest.mark.timeout(30)  # (before: the class run waited for the ssh_config lookups one by one, unbounded)
def test_an_ssh_config_lookup_that_hangs_is_bound_by_the_same_deadline(no_ssh_config: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With CanonicalizeHostname in ~/.ssh/config, paramiko resolves names itself while it reads
    the config: that lookup, too, runs in the target's thread, under the one deadline."""
    from labrunner.executor import ssh

    release = threading.Event()
    lookup = ssh.ssh_config_lookup

    def hanging(host: str) -> dict[str, Any]:
        if host == "slow.lab":
            release.wait(60)
        return lookup(host)

    monkeypatch.setattr(ssh, "ssh_config_lookup", hanging)
    try:
        needs = host_needs([TargetSpec(host="slow.lab"), TargetSpec(host="10.0.0.3")], timeout=0.3)
    finally:
        release.set()
    assert needs == [frozenset({("host", "slow.lab", 22)}), frozenset({("host", "10.0.0.3", 22)})]


def test_every_address_of_a_name_counts(no_ssh_config: Path) -> None:
    def resolve(name: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        both = {"dual.lab": ["10.0.0.3", "2001:db8::3"], "v6.lab": ["2001:DB8::3"]}[name]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in both]

    assert meet("dual.lab", "v6.lab", resolve=resolve)
    assert meet("dual.lab", "10.0.0.3", resolve=resolve)
    assert not meet("v6.lab", "10.0.0.3", resolve=resolve)


def test_a_local_target_is_this_machine(no_ssh_config: Path) -> None:
    assert meet(TargetSpec(host="anything", local=True), "127.0.0.1")


def test_an_ssh_config_that_cannot_be_read_leaves_the_name_as_written(no_ssh_config: Path) -> None:
    no_ssh_config.write_text("Host lab3\n  HostName\n")  # the student's own run says what is wrong with it
    assert host_needs([TargetSpec(host="Lab3")], resolve=lambda *_a, **_k: []) == [frozenset({("host", "lab3", 22)})]
