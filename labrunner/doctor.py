"""Preflight: check everything a run needs, and say how to fix what is missing.

Each check is independent and never raises: a failure becomes a row with its fix, so one
problem (an unknown host key, say) does not hide the others.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from labrunner.config.model import Profile
from labrunner.errors import ConfigError, LabError

if TYPE_CHECKING:
    from labrunner.executor.base import Executor


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    where: str = "local"  # local | target | config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _local_tool(name: str, package: str) -> Check:
    path = shutil.which(name)
    if path:
        return Check(f"{name} installed", True, path)
    return Check(f"{name} installed", False, "not found on PATH", f"apt-get install {package}")


def check_tshark() -> Check:
    from labrunner.analysis import tshark_version

    try:
        version = tshark_version()  # refuses a missing or too old tshark, with the fix
    except LabError as err:
        return Check("tshark (Wireshark's dissectors)", False, str(err), err.hint or "apt-get install tshark")
    return Check("tshark (Wireshark's dissectors)", True, "version " + ".".join(map(str, version)))


def check_weasyprint() -> Check:
    try:
        import weasyprint  # noqa: F401  (imports pango through cffi: the real test)
    except Exception as exc:  # OSError when pango is missing, ImportError when the package is
        return Check("WeasyPrint (PDF)", False, f"{type(exc).__name__}: {exc}".splitlines()[0],
                     "apt-get install libpango-1.0-0 libpangoft2-1.0-0; pip install weasyprint")
    from importlib.metadata import version

    return Check("WeasyPrint (PDF)", True, f"version {version('weasyprint')}")


def check_cjk_fonts() -> Check:
    if not shutil.which("fc-list"):
        return Check("CJK fonts", False, "fontconfig is not installed", "apt-get install fontconfig fonts-noto-cjk")
    out = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    families = sorted({f.split(",")[0].strip() for f in out.splitlines() if f.strip()})
    if not families:
        return Check("CJK fonts", False, "no font covers Chinese: the PDF would show blank boxes",
                     "apt-get install fonts-noto-cjk")
    return Check("CJK fonts", True, ", ".join(families[:3]) + (" ..." if len(families) > 3 else ""))


def local_checks() -> list[Check]:
    return [check_tshark(), _local_tool("editcap", "wireshark-common"), check_weasyprint(), check_cjk_fonts()]


@contextlib.contextmanager
def _guard(rows: list[Check], name: str, fix: str = "") -> Iterator[None]:
    try:
        yield
    except LabError as err:
        rows.append(Check(name, False, str(err), err.hint or fix, "target"))


def target_checks(profile: Profile, connect: Callable[[], Executor], ports: dict[str, list[int]],
                  secret: str | None = None, secret_note: str = "") -> list[Check]:
    """Checks run on the target. ``ports`` maps server names to the ports the scenarios use.

    With the account's ``secret``, one real login to each mail service the scenarios use, from
    the target (a wrong password or an untrusted certificate shows here, not after five failed
    scenarios); without it, ``secret_note`` says why the logins were not tried."""
    rows: list[Check] = []
    name = f"SSH to {profile.target.host}"
    try:
        ex = connect()
    except LabError as err:
        rows.append(Check(name, False, str(err), err.hint or "", "target"))
        return rows
    with ex:
        rows.append(Check(name, True, f"connected as {ex.host_label}; host key verified", where="target"))
        _check_tcpdump(ex, rows)
        _check_servers(ex, profile, ports, rows)
        _check_logins(ex, profile, ports, secret, secret_note, rows)
        _check_clock(ex, rows)
    return rows


def _smtp_login_script() -> tuple[Any, ...]:
    from labrunner.config.model import LineItem

    return (LineItem(expect=220), LineItem(send="EHLO lab-client", expect=250), LineItem(send="AUTH LOGIN", expect=334),
            LineItem(send="{account.user|base64}", expect=334), LineItem(send="{account.secret|base64}", expect=235),
            LineItem(send="QUIT", expect=221))


def login_steps(profile: Profile, ports: dict[str, list[int]]) -> list[Any]:
    """One login-only step per mail service the scenarios use, over its implicit-TLS port when
    it has one (so the server certificate is checked against the profile's CA too): SMTP AUTH
    LOGIN then QUIT, POP3 USER/PASS then QUIT, IMAP LOGIN, a read-only look and LOGOUT. No mail
    is sent, read or deleted."""
    from labrunner.config.model import ImapStep, LinesStep, Pop3Step

    steps: list[Any] = []
    for name in ("smtp", "pop3", "imap"):
        server = profile.servers.get(name)
        if name not in ports or server is None:
            continue
        security: Literal["tls", "plain"] | None = ("tls" if "tls" in server.ports else
                                                   "plain" if "plain" in server.ports else None)
        if security is None:
            continue  # STARTTLS only: the run's own first session is the check
        if name == "smtp":
            steps.append(LinesStep(server="smtp", security=security, port=security, protocol="smtp",
                                   script=_smtp_login_script()))
        elif name == "pop3":
            steps.append(Pop3Step(security=security, commands=(), retrieve="none"))
        else:
            steps.append(ImapStep(security=security, search="ALL", fetch="(FLAGS)"))
    return steps


def _check_logins(ex: Executor, profile: Profile, ports: dict[str, list[int]], secret: str | None,
                  note: str, rows: list[Check]) -> None:
    import os
    import tempfile
    from pathlib import Path

    from labrunner import sessions
    from labrunner.secrets import Redactor
    from labrunner.sessions.context import step_endpoint

    steps = login_steps(profile, ports)
    if not steps:
        return
    if secret is None:
        rows.append(Check("mail logins", True, f"not tried: {note}", where="target"))
        return
    trust = f"certificate verified with {profile.ca_file}" if profile.ca_file else \
        "certificate verified with this machine's CAs"
    with tempfile.TemporaryDirectory(prefix="labrunner-doctor-") as tmp:
        keylog = Path(tmp) / "keylog.txt"
        os.close(os.open(keylog, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        for step in steps:
            with _guard(rows, f"log in to {step.server}"):
                host, port, security = step_endpoint(step, profile)
                name = f"log in to {step.server.upper()} {host}:{port}"
                ctx = sessions.SessionContext(executor=ex, profile=profile, secret=secret, keylog=keylog,
                                              redactor=Redactor(), scenario_dir=Path(tmp),
                                              deadline=time.monotonic() + 30)
                ctx.step_timeout = ctx.reply_timeout = 20.0
                result = sessions.run_step(step, ctx)
                if result.ok:
                    how = trust if security == "tls" else "plain text, no certificate"
                    rows.append(Check(name, True, f"logged in as {profile.account.login}; {how}", where="target"))
                else:
                    rows.append(Check(name, False, result.error or "login failed", result.hint or
                                      "check the account's address and password (QQ Mail: the authorization "
                                      "code, 授权码)", "target"))


def _check_tcpdump(ex: Executor, rows: list[Check]) -> None:
    with _guard(rows, "tcpdump on the target"):
        # 127: no tcpdump file on PATH; 126: there, but 0750 root:labrunner-cap and the user
        # not in the group (`command -v` would call that "not found" too)
        res = ex.run('p=; for d in $(printf %s "$PATH" | tr : " "); do [ -e "$d/tcpdump" ] && { p=$d/tcpdump; '
                     'break; }; done; [ -f "$p" ] || exit 127; v=$("$p" --version 2>&1); s=$?; '
                     'printf "%s\\n" "$v" | head -n1; exit $s', timeout=15, check=False)
        version = (res.text().strip().splitlines() or [""])[-1]
        if res.exit_code == 127:
            rows.append(Check("tcpdump on the target", False, "not installed",
                              "on the target: apt-get install tcpdump (or yum install tcpdump)", "target"))
            return
        if res.exit_code != 0:
            from labrunner.capture import setup_hint

            rows.append(Check("tcpdump on the target", False, f"the SSH user may not run it: {version}",
                              setup_hint(_user(ex)), "target"))
            return
        rows.append(Check("tcpdump on the target", True, version, where="target"))
    with _guard(rows, "capture permitted"):
        rows.append(_capture_check(ex))


def _user(ex: Executor) -> str:
    import getpass

    return str(getattr(ex, "user", "") or getpass.getuser())


def _capture_check(ex: Executor) -> Check:
    """Start and stop a real capture, as a run does (no sudo: see capture.setup_command).

    The filter matches nothing (TEST-NET-1 port 9), so the check only proves that tcpdump
    runs and listens as the SSH user."""
    import tempfile
    from pathlib import Path

    from labrunner.capture import Capture, setup_hint

    user = _user(ex)
    name = "capture permitted"
    with tempfile.TemporaryDirectory(prefix="labrunner-doctor-") as tmp:
        try:
            cap = Capture(ex, Path(tmp), interface="any", bpf="host 192.0.2.1 and tcp port 9")
            cap.start()
            cap.stop()
        except LabError as err:
            return Check(name, False, str(err), err.hint or setup_hint(user), "target")
    how = "as root" if user == "root" else f"as {user}, without root (tcpdump's capabilities)"
    return Check(name, True, f"tcpdump listens {how}", where="target")


def _check_servers(ex: Executor, profile: Profile, ports: dict[str, list[int]], rows: list[Check]) -> None:
    for server_name, port_list in sorted(ports.items()):
        server = profile.servers.get(server_name)
        if server is None:
            continue
        label = f"DNS: {server.host}"
        with _guard(rows, label):
            res = ex.run(["getent", "ahosts", server.host], timeout=15, check=False)
            addrs = sorted({line.split()[0] for line in res.text().splitlines() if line.strip()})
            if res.exit_code != 0 or not addrs:
                rows.append(Check(label, False, "the target cannot resolve this name",
                                  "check /etc/resolv.conf on the target", "target"))
                continue
            rows.append(Check(label, True, ", ".join(addrs[:4]), where="target"))
        for port in sorted(set(port_list)):
            _check_port(ex, server.host, port, rows)


def _check_port(ex: Executor, host: str, port: int, rows: list[Check]) -> None:
    label = f"reach {host}:{port} from the target"
    t0 = time.monotonic()
    try:
        stream = ex.open_connection(host, port, timeout=8)
    except LabError as err:
        fix = err.hint or ""
        if port == 25 and not fix:
            fix = ("cloud hosts (Alibaba Cloud ECS among them) block outbound port 25: ask the provider to unblock "
                   "it (阿里云: 25 端口解封) for the plain-text scenarios, or use 465 or 587")
        rows.append(Check(label, False, str(err), fix, "target"))
        return
    with contextlib.suppress(Exception):
        stream.close()
    rows.append(Check(label, True, f"connected in {(time.monotonic() - t0) * 1000:.0f} ms", where="target"))


def _check_clock(ex: Executor, rows: list[Check]) -> None:
    with _guard(rows, "clock"):
        t0 = time.time()
        res = ex.run("date +%s.%N", timeout=15, check=False)
        t1 = time.time()
        try:
            remote = float(res.text().strip())
        except ValueError:
            rows.append(Check("clock", False, "could not read the target's clock", where="target"))
            return
        skew = remote - (t0 + t1) / 2
        ok = abs(skew) < 2.0
        rows.append(Check("clock", ok, f"target is {skew:+.2f} s from this machine",
                          "" if ok else "enable NTP on the target (timedatectl set-ntp true): "
                          "timestamps in the report would not match", "target"))


def run_doctor(config: str, *, profile: str | None = None, local_only: bool = False) -> list[Check]:
    """All checks: this machine, then (unless ``local_only``) the profile's target."""
    rows = local_checks()
    if local_only:
        return rows
    from labrunner import executor
    from labrunner.config.load import load_lab, load_scenarios, resolve_profile
    from labrunner.sessions.context import scenario_endpoints

    try:
        lab = load_lab(config)
        prof = resolve_profile(lab, profile)
        ports: dict[str, list[int]] = {}
        scenarios = load_scenarios(lab, None)
        for sc in scenarios:
            for server_name, _host, port in scenario_endpoints(sc, prof):
                ports.setdefault(server_name, []).append(port)
        rows += webmail_checks(scenarios, prof)
    except ConfigError as err:
        # every problem, but as rows: the local checks above still show
        return rows + [Check("configuration", False, line, "fix it and run `labrunner validate`", "config")
                       for line in err.problems]
    except LabError as err:  # no lab.yaml, the sandbox not running, an unknown profile ...
        return [*rows, Check("configuration", False, str(err), err.hint or "", "config")]
    secret, note = _login_secret(prof)
    return [*rows, check_secret(prof), *target_checks(prof, lambda: executor.connect(prof.target), ports,
                                                      secret, note)]


def _login_secret(profile: Profile) -> tuple[str | None, str]:
    """The account's password for the login checks, when it can be had without asking (the
    sandbox's state, the environment variable); else None and why."""
    from labrunner import secrets
    from labrunner.config.load import sandbox_account

    ref = profile.account.secret
    try:
        state = sandbox_account(profile)
        found = secrets.source(ref, state)
        if found is None or found.startswith("a prompt"):
            return None, ("the password is asked at the start of the run" if found else "the password is not set")
        return secrets.resolve(ref, what=f"password of {profile.account.address}", state=state), ""
    except LabError as err:
        return None, str(err)


def webmail_checks(scenarios: list[Any], profile: Profile) -> list[Check]:
    """A webmail step against a web mail whose login needs a browser (QQ Mail): said before the run."""
    from labrunner.sessions.context import step_endpoint
    from labrunner.sessions.webmail import unsupported

    rows = []
    for sc in scenarios:
        for i, step in enumerate(sc.steps, 1):
            if step.kind != "webmail":
                continue
            refused = unsupported(step_endpoint(step, profile)[0])
            if refused is not None:
                rows.append(Check(f"web mail login ({sc.name}, step {i})", False, refused.message,
                                  refused.hint or "", "config"))
    return rows


def check_secret(profile: Profile) -> Check:
    """The account's password (QQ Mail: the authorization code) is there for the run; never
    asked here, never shown. Where it comes from and the fix are secrets.resolve's own."""
    from labrunner import secrets
    from labrunner.config.load import sandbox_account

    ref = profile.account.secret
    name = f"password of {profile.account.address}"
    try:
        state = sandbox_account(profile)
    except LabError as err:
        return Check(name, False, str(err), err.hint or "", "config")
    found = secrets.source(ref, state)
    refused = secrets.refused(ref, state)  # there, but a run would refuse it (a .env's CR)
    if refused is not None:
        return Check(name, False, refused[0], refused[1], "config")
    if found is not None:
        return Check(name, True, f"from {found}", where="config")
    reason, fix = secrets.missing(ref)
    return Check(name, False, reason, fix, "config")
