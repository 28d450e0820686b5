"""The sandbox's servers: sshd in `ecs`; Postfix, Dovecot, PHP-FPM and nginx in `mail`.

PHP-FPM runs Debian's Roundcube, the provider's web mail that nginx serves at
https://mail.lab.test/ (its SQLite database and configuration in the srv dir, see
``write_webmail``).

Each runs from config files in the instance's srv dir (never the system's /etc/...), started
with `ip netns exec` so it binds inside its namespace and sees the sandbox's /etc/hosts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from labrunner.errors import SandboxError
from labrunner.sandbox.layout import MAX_TARGETS, Layout, host_name
from labrunner.sandbox.system import run, run_daemon


@dataclass(frozen=True)
class Service:
    name: str
    host: str  # "ecs" or "mail"
    ports: tuple[int, ...]
    pid_file: str  # relative to the srv dir
    log: str  # relative to the srv dir


SERVICES: dict[str, Service] = {
    "sshd": Service("sshd", "ecs", (22,), "sshd/sshd.pid", "logs/sshd.log"),
    "postfix": Service("postfix", "mail", (25, 587, 465), "postfix/spool/pid/master.pid", "logs/postfix.log"),
    "dovecot": Service("dovecot", "mail", (110, 995, 143, 993), "dovecot/run/master.pid", "logs/dovecot.log"),
    "php-fpm": Service("php-fpm", "mail", (), "php/php-fpm.pid", "logs/php-fpm.log"),
    "nginx": Service("nginx", "mail", (443,), "nginx/nginx.pid", "logs/nginx.log"),
}
# Postfix first: Dovecot puts its SASL socket into Postfix's queue directory. PHP-FPM before
# nginx, which passes the web mail's requests to its socket.
START_ORDER = ("sshd", "postfix", "dovecot", "php-fpm", "nginx")
PHP_FPM = "/usr/sbin/php-fpm8.2"
ROUNDCUBE_SQL = Path("/usr/share/roundcube/SQL/sqlite.initial.sql")
# Debian's defaults and MIME table, next to the sandbox's own config.inc.php
ROUNDCUBE_SHARED = ("defaults.inc.php", "mimetypes.php")
_SSHD_K = re.compile(r"sshd([2-9]|[1-9][0-9])\Z")


def target_sshd(k: int) -> Service:
    """The sshd of target k (k = 1 is the `sshd` above; k > 1: `sshd2` on `ecs2` ...)."""
    if k == 1:
        return SERVICES["sshd"]
    return Service(f"sshd{k}", host_name(k), (22,), f"sshd{k}/sshd.pid", f"logs/sshd{k}.log")


def all_services(targets: int = 1) -> dict[str, Service]:
    """Every server of an instance with ``targets`` targets, in start order."""
    out = {"sshd": SERVICES["sshd"]}
    out.update({f"sshd{k}": target_sshd(k) for k in range(2, targets + 1)})
    out.update({n: SERVICES[n] for n in START_ORDER if n != "sshd"})
    return out


def service(name: str) -> Service:
    """A service by name: the fixed ones and the numbered sshds of a class's targets."""
    if name in SERVICES:
        return SERVICES[name]
    m = _SSHD_K.match(name)
    if m and int(m.group(1)) <= MAX_TARGETS:
        return target_sshd(int(m.group(1)))
    raise SandboxError(f"unknown sandbox service {name!r}: use one of {', '.join(SERVICES)} "
                       "(or sshd2, sshd3 ... for the targets of a class)")


def template(name: str, values: dict[str, str]) -> str:
    """A config file from labrunner/sandbox/files with its {{placeholders}} filled in."""
    text = resources.files("labrunner.sandbox").joinpath("files").joinpath(name).read_text(encoding="utf-8")

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise SandboxError(f"sandbox template {name}: no value for {{{{{key}}}}}")
        return values[key]

    return re.sub(r"\{\{(\w+)\}\}", fill, text)


def netns_argv(layout: Layout, host: str, argv: list[str]) -> list[str]:
    ns = {"ecs": layout.ecs_ns, "mail": layout.mail_ns}.get(host)
    m = re.fullmatch(r"ecs([2-9]|[1-9][0-9])", host)
    if ns is None and m and int(m.group(1)) <= MAX_TARGETS:
        ns = layout.target_ns(int(m.group(1)))
    if ns is None:
        raise SandboxError(f"unknown sandbox host {host!r}: use `ecs`, `ecs2` ... or `mail`")
    return ["ip", "netns", "exec", ns, *argv]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports(targets: list[tuple[str, str, int]], deadline_s: float = 10.0) -> list[tuple[str, str, int]]:
    """Poll (service, host, port) until all accept connections; returns the ones that never did."""
    pending = list(targets)
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if not port_open(t[1], t[2], timeout=0.3)]
        if pending:
            time.sleep(0.05)
    return pending


def start(layout: Layout, name: str) -> None:
    """Start one service (its configs must already be written); raises SandboxError."""
    srv = layout.srv_dir
    svc = service(name)
    if name.startswith("sshd"):
        # sshd insists on its privilege-separation directory, which only systemd creates.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        conf = srv / Path(svc.pid_file).parent / "sshd_config"
        argv = ["/usr/sbin/sshd", "-f", str(conf), "-E", str(srv / svc.log)]
        host = svc.host
    elif name == "postfix":
        argv = ["/usr/sbin/postfix", "-c", str(srv / "postfix/etc"), "start"]
        host = "mail"
    elif name == "dovecot":
        argv = ["/usr/sbin/dovecot", "-c", str(srv / "dovecot/dovecot.conf")]
        host = "mail"
    elif name == "php-fpm":
        argv = [PHP_FPM, "--fpm-config", str(srv / "php/php-fpm.conf")]
        host = "mail"
    elif name == "nginx":
        argv = ["/usr/sbin/nginx", "-p", str(srv / "nginx"), "-c", str(srv / "nginx/nginx.conf"),
                "-e", str(srv / "logs/nginx.log")]
        host = "mail"
    else:
        raise SandboxError(f"unknown sandbox service {name!r}: use one of {', '.join(SERVICES)}")
    try:
        run_daemon(netns_argv(layout, host, argv), timeout=30)
    except SandboxError as exc:
        # Postfix reports a bad start only in its log (its launcher prints nothing without a
        # terminal), so the log's last line is often the only useful one.
        log = srv / svc.log
        last = postfix_check(srv / "postfix/etc") if name == "postfix" else ""
        last = last or last_line(log)
        said = f"; its log says: {last}" if last else ""
        raise SandboxError(f"{name} did not start: {exc}{said}", hint=f"see {log}") from exc


def write_webmail(srv: Path, values: dict[str, str]) -> None:
    """PHP-FPM's and Roundcube's configuration, and Roundcube's empty SQLite database.

    Everything Roundcube writes (database, temp, logs) belongs to www-data, PHP-FPM's user.
    The database is made here from Debian's schema (milliseconds), not by Roundcube's installer.
    """
    import secrets
    import sqlite3

    www = pwd.getpwnam("www-data")
    (srv / "php").mkdir(mode=0o755, exist_ok=True)
    rc = srv / "roundcube"
    conf = rc / "config"
    conf.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chown(conf, 0, www.pw_gid)
    for sub in ("db", "temp", "logs"):
        (rc / sub).mkdir(mode=0o700, exist_ok=True)
        os.chown(rc / sub, www.pw_uid, www.pw_gid)
    (srv / "php/php-fpm.conf").write_text(template("php-fpm.conf", values), encoding="utf-8")
    # des_key encrypts the IMAP password in Roundcube's session: a fresh one per instance
    rc_values = {**values, "des_key": secrets.token_urlsafe(18)[:24]}
    config = conf / "config.inc.php"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(template("roundcube.inc.php", rc_values))
    os.chown(config, 0, www.pw_gid)
    for name in ROUNDCUBE_SHARED:
        link = conf / name
        if not link.is_symlink():
            link.symlink_to(Path("/etc/roundcube") / name)
    db = rc / "db/roundcube.db"
    if not db.exists():
        with contextlib.closing(sqlite3.connect(db)) as con:
            con.executescript(ROUNDCUBE_SQL.read_text(encoding="utf-8"))
            con.commit()
        os.chown(db, www.pw_uid, www.pw_gid)
        os.chmod(db, 0o640)


def postfix_check(conf_dir: Path, timeout: float = 20.0) -> str:
    """The last line `postfix check` prints about a configuration, or "".

    Postfix writes a fatal configuration error only to a terminal (or to a log service that is
    not running yet), so it runs here with a pseudo-terminal as its output.
    """
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(["/usr/sbin/postfix", "-c", str(conf_dir), "check"], stdin=subprocess.DEVNULL,
                                stdout=slave, stderr=slave, start_new_session=True)
    except OSError:
        os.close(master)
        os.close(slave)
        return ""
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    lines = [ln.strip() for ln in out.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def last_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def pid_of(layout: Layout, name: str) -> int | None:
    return read_pid(layout.srv_dir / service(name).pid_file)


def stop(layout: Layout, name: str, timeout: float = 5.0) -> None:
    """Stop one service: its master and the helpers in its session, waiting until they are gone."""
    pid = pid_of(layout, name)
    if pid_alive(pid):
        assert pid is not None
        # The master's helpers (Dovecot's auth, log, anvil; Postfix's smtpd ...) share its
        # session; an orphaned Dovecot auth process keeps the SASL socket and blocks a restart.
        family = [p for p in session_members(pid) if p != pid]
        os.kill(pid, signal.SIGTERM)
        _wait_dead([pid], timeout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in [pid, *family]:
                if pid_alive(p):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, sig)
            if _wait_dead([pid, *family], timeout if sig == signal.SIGTERM else 2.0):
                break
    # A dead master may linger as a zombie until init reaps it, and Dovecot's and Postfix's
    # "already running?" checks would take the zombie for a live server: drop the pid file.
    with contextlib.suppress(FileNotFoundError):
        (layout.srv_dir / service(name).pid_file).unlink()


def session_members(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (a daemon master is its session's leader)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid):
            found.append(int(entry))
    return found


def _wait_dead(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def kill_netns_processes(ns: str, timeout: float = 3.0) -> list[int]:
    """TERM, then KILL, every process left in a namespace (servers, sessions, tcpdumps)."""
    def pids() -> list[int]:
        out = run(["ip", "netns", "pids", ns], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    found = pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids():
            break
    return found
