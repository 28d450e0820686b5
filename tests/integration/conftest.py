"""Fixtures for the integration tests: the sandbox lab with its real servers.

The instance comes from $LABRUNNER_SANDBOX_INSTANCE (default `test`), so several developers and
test sessions can run side by side. It is started once per session and taken down at the end,
but only if this session started it: a sandbox someone already had running is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

TEST_INSTANCE = "test"


@pytest.fixture(scope="session")
def sandbox_instance() -> str:
    """The name of the sandbox instance the integration tests use."""
    from labrunner.sandbox import validate_name

    return validate_name(os.environ.get("LABRUNNER_SANDBOX_INSTANCE") or TEST_INSTANCE)


@pytest.fixture(scope="session")
def sandbox(sandbox_instance: str) -> Iterator[dict[str, Any]]:
    """The state dict of a running, healthy sandbox (see labrunner/sandbox/lifecycle.py)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root (network namespaces): run the integration tests as root")
    from labrunner import sandbox as sb

    was_running = sb.state_path(sandbox_instance).exists()
    state = sb.up(sandbox_instance, progress=lambda _m: None)
    try:
        yield state
    finally:
        if not was_running:
            sb.down(sandbox_instance, progress=lambda _m: None)
