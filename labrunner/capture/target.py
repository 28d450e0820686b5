"""Transitional names for what the target knows, which the executor now holds itself
(``executor.facts``, executor/facts.py); they go once the runner asks the executor directly."""

from __future__ import annotations

from labrunner.executor.base import Executor
from labrunner.executor.facts import facts_script

__all__ = ["choose_interface", "facts_script", "learn_facts", "list_interfaces", "resolve_on_target"]


def resolve_on_target(executor: Executor, host: str, timeout: float = 15) -> list[str]:
    return executor.facts.resolve(host, timeout)


def choose_interface(executor: Executor, first_server_host: str) -> str:
    return executor.facts.route_interface(first_server_host)


def learn_facts(executor: Executor, output: str) -> None:
    executor.facts.learn(output)


def list_interfaces(executor: Executor) -> list[str]:
    return executor.facts.interfaces()
