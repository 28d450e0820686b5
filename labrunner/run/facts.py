"""What the run records about this machine and the target (the report's section 2). The facts
the captures need (names, routes) are the executor's: ``executor.facts`` (executor/facts.py)."""

from __future__ import annotations

import contextlib
import platform
from typing import TYPE_CHECKING

from labrunner import __version__, runfolder
from labrunner.errors import LabError

if TYPE_CHECKING:
    from labrunner.executor.base import Executor


def local_tools() -> dict[str, str]:
    from labrunner.analysis import tshark_version

    tools = {"labrunner": __version__, "python": platform.python_version()}
    with contextlib.suppress(LabError):
        tools["tshark"] = ".".join(str(p) for p in tshark_version())
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        tools["weasyprint"] = version("weasyprint")
        tools["paramiko"] = version("paramiko")
    return tools


_ENV_SCRIPT = r"""
. /etc/os-release 2>/dev/null; echo "os=${PRETTY_NAME:-unknown}"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname)"
echo "tcpdump=$(tcpdump --version 2>&1 | head -n1 | sed 's/^tcpdump version //')"
echo "python3=$(python3 --version 2>&1 | sed 's/^Python //')"
echo "openssh=$(ssh -V 2>&1 | head -n1)"
ip -o -4 addr show scope global 2>/dev/null | awk '{print "addr=" $2 " " $4}'
ip -o -6 addr show scope global 2>/dev/null | awk '{print "addr=" $2 " " $4}'
"""


def target_environment(executor: Executor) -> runfolder.TargetInfo:
    """OS, kernel, tool versions and addresses of the target, for the report's section 2."""
    res = executor.run(_ENV_SCRIPT, timeout=20, check=False)
    facts: dict[str, str] = {}
    addresses: list[str] = []
    tools: dict[str, str] = {}
    for line in res.text().splitlines():
        key, _, value = line.partition("=")
        if key == "addr":
            addresses.append(value)
        elif key in ("tcpdump", "python3", "openssh"):
            tools[key] = value
        elif key in ("os", "kernel", "hostname"):
            facts[key] = value
    return runfolder.TargetInfo(label=executor.host_label, addresses=tuple(addresses), tools=tools,
                                os=facts.get("os"), kernel=facts.get("kernel"), hostname=facts.get("hostname"))
