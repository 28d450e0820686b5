"""A key file in a folder the user may not enter (student-ta D7): one line, exit 2, not an
internal error. Really run as an unprivileged user (nobody, through setpriv), since root
enters every folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def as_nobody(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": f"{ROOT}:{site}", "QQ_AUTH_CODE": "x"}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}", *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def project() -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run a command as another user")
    folder = Path(tempfile.mkdtemp(prefix="labrunner-d7-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        if as_nobody("-c", "import labrunner.cli, yaml", cwd=folder).returncode != 0:
            pytest.skip("this interpreter and the project's packages are not readable by another user")
        keys = folder / "keys"
        keys.mkdir(mode=0o700)
        (keys / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        (folder / "scenarios").mkdir(mode=0o755)
        shutil.copy(ROOT / "scenarios" / "plain-smtp.yaml", folder / "scenarios")
        (folder / "scenarios" / "plain-smtp.yaml").chmod(0o644)
        (folder / "lab.yaml").write_text(
            "default_profile: qq\nprofiles:\n  qq:\n    target: {host: 192.0.2.7, user: root, key: "
            f"{keys / 'id_ed25519'}}}\n    servers:\n      smtp: {{host: smtp.qq.com, plain: 25}}\n"
            "    account: {address: 1@qq.com, secret: {env: QQ_AUTH_CODE}}\n", encoding="utf-8")
        (folder / "lab.yaml").chmod(0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


def test_validate_says_the_key_folder_is_closed(project: Path) -> None:
    res = as_nobody("-m", "labrunner", "validate", "-c", "lab.yaml", cwd=project)
    assert res.returncode == 2, res.stderr
    line = res.stderr.splitlines()[0]
    assert line.startswith("lab.yaml:4:") and "profiles.qq.target.key: cannot read the key file " in line
    assert "not open to this user (nobody)" in line and "internal error" not in res.stderr
    assert "Traceback" not in res.stderr
