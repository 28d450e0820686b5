"""The sandbox lab: a target host `ecs` and a mail provider `mail` in network namespaces.

`up()` starts real OpenSSH, Postfix, Dovecot and nginx, each in its namespace and from its own
config files, and writes ``/run/labrunner/sandbox-NAME/state.json`` (0600), which the `sandbox`
profile and the integration tests read. See ``lifecycle.py`` for the life cycle and the state
file, ``network.py`` for the topology.
"""

from __future__ import annotations

from labrunner.sandbox.faults import (
    block_port,
    extra_account,
    netns_exec,
    start_service,
    stop_service,
    unblock_port,
)
from labrunner.sandbox.layout import default_instance, validate_name
from labrunner.sandbox.lifecycle import (
    down,
    format_status,
    instances,
    load_state,
    problems,
    public_state,
    read_state,
    state_path,
    status,
    up,
)
from labrunner.sandbox.state import MailAccount, MailServer, SshHost, State

__all__ = [
    "MailAccount",
    "MailServer",
    "SshHost",
    "State",
    "block_port",
    "default_instance",
    "down",
    "extra_account",
    "format_status",
    "instances",
    "load_state",
    "netns_exec",
    "problems",
    "public_state",
    "read_state",
    "start_service",
    "state_path",
    "status",
    "stop_service",
    "unblock_port",
    "up",
    "validate_name",
]
