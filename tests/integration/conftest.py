"""Fixtures for the integration tests: the sandbox lab with its real servers.

The instance comes from $LABRUNNER_SANDBOX_INSTANCE (default `test`), so several developers and
test sessions can run side by side. It is started once per session and taken down at the end,
but never when someone had started it by hand before: a sandbox a person brought up is left as
it was. Test sessions sharing one instance register themselves, and only the last one to finish
takes a fixture-started sandbox down, so one session never pulls it from under another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner.errors import LabError

TEST_INSTANCE = "test"
# The session's sandbox is a class of three targets (ecs, ecs2, ecs3), so the inventory tests
# share it with every other test instead of rebuilding it (new keys) halfway through a session.
CLASS_TARGETS = 3


@pytest.fixture(scope="session")
def sandbox_instance() -> str:
    """The name of the sandbox instance the integration tests use."""
    from labrunner.sandbox import validate_name

    return validate_name(os.environ.get("LABRUNNER_SANDBOX_INSTANCE") or TEST_INSTANCE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sessions_lock(users: Path) -> Iterator[None]:
    users.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(users / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def sandbox(sandbox_instance: str) -> Iterator[dict[str, Any]]:
    """The state dict of a running, healthy sandbox (see labrunner/sandbox/README.md)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (network namespaces): run the integration tests as root")
    from labrunner import sandbox as sb
    from labrunner.sandbox import layout

    users = layout.RUN_ROOT / f"pytest-{sandbox_instance}"
    started_marker = users / "started-by-pytest"
    me = users / str(os.getpid())
    with _sessions_lock(users):
        was_running = sb.state_path(sandbox_instance).exists()
        running = 0
        if was_running:
            with contextlib.suppress(LabError, KeyError, TypeError):
                running = len(sb.load_state(sandbox_instance).targets)
        # A bigger class someone started is kept; a smaller one is rebuilt before any test runs.
        state = sb.up(sandbox_instance, targets=max(running, CLASS_TARGETS), progress=lambda _m: None)
        if not was_running:
            # Which sandbox we started: one a person restarted by hand later is not ours.
            started_marker.write_text(state["created"])
        me.touch()
    try:
        yield state
    finally:
        with _sessions_lock(users):
            me.unlink(missing_ok=True)
            others = [p for p in users.iterdir() if p.name.isdigit() and _alive(int(p.name))]
            ours = started_marker.exists() and sb.state_path(sandbox_instance).exists() and \
                started_marker.read_text() == sb.load_state(sandbox_instance).created
            if not others and ours:
                sb.down(sandbox_instance, progress=lambda _m: None)
            if not others:
                started_marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def sandbox_class(sandbox: dict[str, Any]) -> dict[str, Any]:
    """The session's sandbox, with at least CLASS_TARGETS targets and accounts."""
    assert len(sandbox["targets"]) >= CLASS_TARGETS and len(sandbox["accounts"]) >= CLASS_TARGETS
    return sandbox
