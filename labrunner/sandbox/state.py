"""The sandbox state file, typed: what `labrunner sandbox up` tells the rest of labrunner.

``up()`` writes ``/run/labrunner/sandbox-NAME/state.json`` (0600; lifecycle.py builds it);
:func:`State.from_json` is its one reader for everything outside the sandbox package (the
``sandbox`` profile and a class's targets in config/load.py, the account's password for
secrets.py, the run's origin). A state that lacks a part they need is one SandboxError naming the
part, with the fix (restart the sandbox), when it is read, not a KeyError later. The sandbox's own
code (status, repair, faults) keeps reading the whole document (``State.document``).

The password is in the state (0600) and in :class:`MailAccount`, never in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labrunner.errors import SandboxError

_RESTART = "restart the sandbox: `labrunner sandbox down` then `labrunner sandbox up`"


@dataclass(frozen=True)
class SshHost:
    """A target host of the sandbox (ecs, ecs2 ...): how to reach it over SSH, where it lives."""

    name: str
    host: str
    port: int | None = None
    user: str | None = None
    key: str | None = None  # the private key labrunner logs in with
    host_key: str | None = None  # its fingerprint, "SHA256:..."
    known_hosts: str | None = None
    netns: str | None = None
    interface: str | None = None


@dataclass(frozen=True)
class MailAccount:
    """A mail account of the sandbox (student@lab.test, student2@lab.test ...)."""

    address: str
    user: str | None = None
    password: str = field(default="", repr=False)  # the state is the one place it is kept
    maildir: str | None = None

    def secret(self, key: str) -> str | None:
        """The value a SecretRef's ``state`` key names ("password"); None when there is none."""
        value = {"password": self.password}.get(key)
        return value or None


@dataclass(frozen=True)
class MailServer:
    host: str
    ports: dict[str, int]


@dataclass(frozen=True)
class State:
    instance: str
    ecs: SshHost  # target 1
    servers: dict[str, MailServer]  # smtp, pop3, imap, web
    account: MailAccount  # account 1
    targets: tuple[SshHost, ...]  # ecs, ecs2 ... (a state without `targets` has ecs alone)
    accounts: tuple[MailAccount, ...]  # account 1, 2 ... (one per target)
    ca_file: str | None = None
    created: str | None = None  # when `sandbox up` built it (ISO 8601)
    version: int | None = None
    # the whole file as written, for the sandbox's own code; not compared, never shown
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def account_number(self, number: int | None) -> MailAccount | None:
        """Account ``number`` (1-based; None: the profile's own, account 1); None if there is none."""
        if number is None:
            return self.account
        return self.accounts[number - 1] if 1 <= number <= len(self.accounts) else None

    @classmethod
    def from_json(cls, data: Any) -> State:
        """The state of a state.json document; SandboxError naming the first part that is missing."""
        if not isinstance(data, Mapping):
            raise SandboxError("the sandbox state is not a JSON object", hint=_RESTART)
        ecs = _host("ecs", data.get("ecs"), "ecs")
        servers_doc = data.get("servers")
        if not isinstance(servers_doc, Mapping) or not isinstance(servers_doc.get("smtp"), Mapping):
            raise _missing("servers.smtp")
        servers = {str(name): _server(name, spec) for name, spec in servers_doc.items()}
        account = _account("account", data.get("account"))
        targets_doc = data.get("targets")
        targets = (tuple(_host(f"targets[{i}]", t, None) for i, t in enumerate(targets_doc, 1))
                   if isinstance(targets_doc, list) and targets_doc else (ecs,))
        accounts_doc = data.get("accounts")
        accounts = (tuple(_account(f"accounts[{i}]", a) for i, a in enumerate(accounts_doc, 1))
                    if isinstance(accounts_doc, list) and accounts_doc else (account,))
        instance = data.get("instance")
        return cls(
            instance=instance if isinstance(instance, str) else "", ecs=ecs, servers=servers, account=account,
            targets=targets, accounts=accounts, ca_file=_opt(data, "ca_file", str),
            created=_opt(data, "created", str), version=_opt(data, "version", int), document=dict(data),
        )


def _missing(what: str) -> SandboxError:
    return SandboxError(f"the sandbox state has no usable {what}", hint=_RESTART)


def _opt(part: Mapping[str, Any], key: str, kind: type) -> Any:
    value = part.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _need(part: Any, where: str, key: str) -> str:
    value = part.get(key) if isinstance(part, Mapping) else None
    if not isinstance(value, str) or not value:
        raise _missing(f"{where}.{key}")
    return value


def _host(where: str, part: Any, name: str | None) -> SshHost:
    host = _need(part, where, "host")
    return SshHost(
        name=name or _opt(part, "name", str) or where, host=host, port=_opt(part, "port", int),
        user=_opt(part, "user", str), key=_opt(part, "key", str), host_key=_opt(part, "host_key", str),
        known_hosts=_opt(part, "known_hosts", str), netns=_opt(part, "netns", str),
        interface=_opt(part, "interface", str))


def _account(where: str, part: Any) -> MailAccount:
    address = _need(part, where, "address")
    return MailAccount(address=address, user=_opt(part, "user", str), password=_opt(part, "password", str) or "",
                       maildir=_opt(part, "maildir", str))


def _server(name: Any, spec: Any) -> MailServer:
    ports = spec.get("ports") if isinstance(spec, Mapping) else None
    if not isinstance(ports, Mapping) or not isinstance(spec.get("host"), str):
        raise _missing(f"servers.{name}")
    try:
        return MailServer(spec["host"], {str(m): int(p) for m, p in ports.items() if p})
    except (TypeError, ValueError):
        raise _missing(f"servers.{name}") from None
