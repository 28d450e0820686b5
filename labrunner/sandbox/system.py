"""Small system helpers for the sandbox: running commands, root, packages, the lab user.

Every failure becomes a SandboxError with the command and the last line it printed, so the CLI
shows one clear line instead of a traceback.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from labrunner.errors import SandboxError, ToolMissing

LAB_USER = "labrunner-lab"
# Written by versions before the capture group; removed when no sandbox runs any more.
SUDOERS_FILE = Path("/etc/sudoers.d/labrunner-lab")
SUDOERS_MARKER = "# written by `labrunner sandbox up`"

# What the sandbox runs, by the file that proves the package is there (a file check costs
# nothing; dpkg-query would cost a process per package on every `up`).
REQUIRED_FILES: dict[str, str] = {
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/sbin/postfix": "postfix",
    "/usr/sbin/dovecot": "dovecot-core",
    "/usr/lib/dovecot/pop3": "dovecot-pop3d",
    "/usr/lib/dovecot/imap": "dovecot-imapd",
    "/usr/sbin/nginx": "nginx-light",
    # the provider's web mail: Roundcube (SQLite) through PHP-FPM
    "/usr/sbin/php-fpm8.2": "php-fpm",
    "/usr/share/roundcube/index.php": "roundcube-core",
    "/etc/php/8.2/mods-available/pdo_sqlite.ini": "roundcube-sqlite3",  # its php-sqlite3
    "/usr/bin/ip": "iproute2",
    "/usr/sbin/ethtool": "ethtool",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/setcap": "libcap2-bin",
    "/usr/bin/tcpdump": "tcpdump",
    "/usr/bin/python3": "python3",
}


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; a failure raises SandboxError with its last line."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, input=input_text,
            env=env, check=False,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"`{argv[0]}` is not installed",
                          hint="run `sudo labrunner sandbox up` to install what the sandbox needs") from exc
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    if check and proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        last = lines[-1] if lines else "no output"
        raise SandboxError(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {last}")
    return proc


def run_daemon(argv: Sequence[str], *, timeout: float = 30.0) -> None:
    """Start a self-daemonizing server and wait for its launcher to exit.

    Output goes to a file, not a pipe: a daemon that keeps the launcher's stdout open (Dovecot
    does) would make a pipe reader wait forever.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        except FileNotFoundError as exc:
            raise ToolMissing(f"`{argv[0]}` is not installed") from exc
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise SandboxError(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
        if code != 0:
            out.seek(0)
            lines = out.read().strip().splitlines()
            last = lines[-1] if lines else "no output"
            raise SandboxError(f"`{shlex.join(argv)}` failed (exit {code}): {last}")


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        missing = missing_packages() if action == "up" else []
        also = f" (it will also install the missing Debian packages: {' '.join(missing)})" if missing else ""
        raise SandboxError(
            f"the sandbox needs root for network namespaces: run `sudo labrunner sandbox {action}`",
            hint=f"namespaces, a bridge, servers on ports below 1024 and the lab user all need root{also}",
        )


def missing_packages() -> list[str]:
    return sorted({pkg for path, pkg in REQUIRED_FILES.items() if not os.path.exists(path)})


def ensure_packages(progress: Callable[[str], object]) -> None:
    """Install the Debian packages the sandbox needs when one is missing (we are root here)."""
    missing = missing_packages()
    if not missing:
        return
    progress(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], timeout=1200, env=env)
    except SandboxError as exc:
        raise SandboxError(
            f"could not install {' '.join(missing)}: {exc}",
            hint=f"install them yourself: `sudo apt-get install {' '.join(missing)}`",
        ) from exc
    still = missing_packages()
    if still:
        raise SandboxError(f"Debian packages still missing after apt-get: {' '.join(still)}")


# The comment `up` gives the user it creates: `down` removes only a user that carries it, never
# one an administrator made by hand. It lives in /etc/passwd, so it survives a reboot that
# empties /run (where a marker file would be lost while the user stays).
LAB_USER_COMMENT = "labrunner sandbox lab user"


def ensure_lab_user(user: str | None = None) -> tuple[int, int]:
    """Create the key-only lab user if missing; return its uid and gid."""
    import pwd

    user = user or LAB_USER
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        # '*' as the password: no password login, yet not "locked" ('!'), which sshd without
        # PAM would refuse even for key logins.
        run(["useradd", "--system", "--create-home", "--home-dir", f"/home/{user}",
             "--shell", "/bin/bash", "--comment", LAB_USER_COMMENT,
             "--password", "*", user])
        entry = pwd.getpwnam(user)
    else:
        if _shadow_password(user).startswith("!"):
            run(["usermod", "--password", "*", user])
    return entry.pw_uid, entry.pw_gid


def remove_lab_user(user: str | None = None) -> str:
    """Remove the lab user with its home if `up` created it; what happened, for the progress line.

    Call only when no instance runs: every instance's sshd logs in as this user.
    """
    import pwd

    user = user or LAB_USER
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"no user {user}"
    if entry.pw_gecos != LAB_USER_COMMENT:
        return f"the user {user} stays (not created by the sandbox)"
    proc = run(["userdel", "--remove", user], check=False)
    # 8: still logged in or running a process; 12: the home could not be removed (the user is gone).
    if proc.returncode not in (0, 12):
        lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return f"the user {user} stays: userdel failed ({lines[-1] if lines else f'exit {proc.returncode}'})"
    return f"removed the user {user}"


def _shadow_password(user: str) -> str:
    try:
        with open("/etc/shadow") as fh:
            for line in fh:
                fields = line.split(":")
                if fields[0] == user and len(fields) > 1:
                    return fields[1]
    except OSError:
        pass
    return ""


def ensure_capture_rights(user: str | None = None) -> None:
    """Let the lab user capture as a real lab's non-root user would: tcpdump with file
    capabilities for the group labrunner-cap (capture_rights.setup_command, the very line README and
    doctor give). No sudo: the target namespace shares this machine's files and processes, so
    any sudo rule would be one for this machine."""
    from labrunner.capture_rights import setup_command

    run(["/bin/sh", "-c", setup_command(user or LAB_USER)])


def restore_tcpdump(tcpdump: str | None = None, group_name: str | None = None) -> str | None:
    """Undo ensure_capture_rights on tcpdump (Debian's root:root 0755, no capabilities) and drop
    the group; only when tcpdump is still in our group. What was done, for the progress line."""
    import grp
    import shutil

    from labrunner.capture_rights import CAPTURE_GROUP

    group_name = group_name or CAPTURE_GROUP
    found = tcpdump or shutil.which("tcpdump", path="/usr/bin:/usr/sbin:/bin:/sbin")
    if found is None:
        return None
    path = os.path.realpath(found)
    try:
        group = grp.getgrnam(group_name)
    except KeyError:
        return None
    if os.stat(path).st_gid != group.gr_gid:
        return None
    run(["setcap", "-r", path], check=False)
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)
    run(["groupdel", group_name], check=False)
    return f"{path} is root:root 0755 again, without capabilities"


def remove_sudoers() -> bool:
    """Remove the sudoers drop-in older versions wrote (`labrunner-lab ALL=(ALL:ALL) NOPASSWD:
    ALL`: root on this machine), only if it carries our marker; True if removed."""
    try:
        if SUDOERS_MARKER not in SUDOERS_FILE.read_text():
            return False
    except FileNotFoundError:
        return False
    SUDOERS_FILE.unlink()
    return True
