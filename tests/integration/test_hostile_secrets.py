"""No secret anywhere: the whole experiment with the sandbox account's password, then every other
command a student would type, and a scan of everything written and printed.

Beyond tests/integration/test_run.py::test_no_secret_in_any_file_written_or_printed, this also
scans `--debug` output, `labrunner report` run again, `labrunner analyze` of every capture
(plain and --json, both languages), `doctor`, `list` and `sandbox status`, the text of the PDF
(its raw bytes are compressed, so a byte scan of the file proves nothing), and the servers' logs
the sandbox writes. The forms searched are computed here, independently of secrets.py, and
include HTML- and JSON-escaped spellings.
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_faults import write_lab  # type: ignore[import-not-found]  # same folder

pytestmark = pytest.mark.integration

PRIVATE = ("capture.pcapng", "keylog.txt", "capture.pcap")  # 0600 by design, checked below


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def forms_of(password: str, users: list[str]) -> set[str]:
    raw = password.encode()
    forms = {password, b64(raw)}
    for u in (x.encode() for x in users):
        forms |= {b64(b"\0" + u + b"\0" + raw), b64(u + b"\0" + u + b"\0" + raw), b64(u + b":" + raw)}
    # inside any longer base64 blob: the characters that depend on the password alone
    for pad in range(3):
        enc = b64(b"\0" * pad + raw)
        core = enc[(pad * 4 + 2) // 3 + 1:-4]
        if len(core) >= 8:
            forms.add(core)
    forms |= {html.escape(f) for f in forms} | {json.dumps(f)[1:-1] for f in forms}
    return forms


def cli(lab: Path, *args: str) -> str:
    """What a command printed; it must succeed, or the scan would only see a usage message."""
    config = [] if args[0] == "analyze" else ["-c", str(lab)]
    res = subprocess.run([sys.executable, "-m", "labrunner", "--debug", *args, *config], capture_output=True,
                         text=True, timeout=600, cwd=lab.parent, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"labrunner {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return f"$ labrunner {' '.join(args)}\n{res.stdout}\n{res.stderr}"


def leaks(text: str, forms: set[str]) -> list[str]:
    return sorted(f for f in forms if f in text)


@pytest.fixture(scope="module")
def experiment(sandbox: dict[str, Any], sandbox_instance: str,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One full run with the PDF, then every other command; what each printed, by command."""
    lab = write_lab(tmp_path_factory.mktemp("secrets"), sandbox_instance)
    printed = {"run": cli(lab, "run", "--json")}
    run_dir = (lab.parent / "output" / "latest").resolve()
    assert (run_dir / "report.pdf").is_file(), printed["run"]
    printed["report"] = cli(lab, "report")
    printed["list"] = cli(lab, "list")
    printed["doctor"] = cli(lab, "doctor")
    printed["doctor --json"] = cli(lab, "doctor", "--json")
    # the captures where the password travels: in clear (AUTH LOGIN, telnet) and under TLS
    # with the keys embedded (AUTH PLAIN over 465, POP3 over 995)
    for capture in (run_dir / name / "capture.pcapng" for name in ("plain-smtp", "telnet-smtp", "mail-client")):
        for args in ([], ["--json"]):
            printed[f"analyze {capture} {args}"] = cli(lab, "analyze", str(capture), *args)
    printed["analyze --lang en"] = cli(lab, "analyze", str(run_dir / "telnet-smtp" / "capture.pcapng"), "--lang", "en")
    status = subprocess.run([sys.executable, "-m", "labrunner", "sandbox", "status", "--instance", sandbox_instance],
                            capture_output=True, text=True, timeout=60)
    printed["sandbox status"] = status.stdout + status.stderr
    return lab, printed


@pytest.fixture(scope="module")
def forms(sandbox: dict[str, Any]) -> set[str]:
    account = sandbox["account"]
    return forms_of(account["password"], [account["address"], account["user"]])


def test_the_forms_do_find_the_password_where_it_is(experiment: tuple[Path, dict[str, str]],
                                                    forms: set[str], sandbox: dict[str, Any]) -> None:
    """The scan can fail: the private capture holds the password's base64, and --show-credentials shows it."""
    lab, _ = experiment
    capture = sorted((lab.parent / "output").glob("*/plain-smtp/capture.pcapng"))[0]  # AUTH LOGIN in clear
    assert leaks(capture.read_bytes().decode("latin-1"), forms)
    shown = cli(lab, "analyze", str(capture), "--show-credentials")
    assert leaks(shown, forms), "analyze --show-credentials shows what was sent"


def test_nothing_printed_holds_the_password(experiment: tuple[Path, dict[str, str]], forms: set[str]) -> None:
    _, printed = experiment
    assert len(printed) >= 10
    for what, text in printed.items():
        assert "Traceback" not in text, text
        assert not leaks(text, forms), f"`{what}` printed a form of the password"


def test_no_file_written_holds_the_password(experiment: tuple[Path, dict[str, str]], forms: set[str]) -> None:
    lab, _ = experiment
    scanned = 0
    for path in sorted((lab.parent / "output").rglob("*")):
        if not path.is_file():
            continue
        if path.name in PRIVATE:
            assert path.stat().st_mode & 0o077 == 0, f"{path} holds secrets and must be 0600"
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".pdf":
            text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                                  text=True, check=True).stdout
            assert "SMTP" in text  # the text layer really was read
        assert not leaks(text, forms), f"{path} holds a form of the password"
        scanned += 1
    assert scanned >= 6 * 2 + 3  # each scenario's transcript and analysis, manifest, report.html and .pdf


def test_the_servers_logs_hold_no_password(experiment: tuple[Path, dict[str, str]], forms: set[str],
                                           sandbox: dict[str, Any]) -> None:
    srv = Path(sandbox["srv_dir"])
    maildir = Path(sandbox["maildir"])
    scanned = 0
    for path in srv.rglob("*"):
        if not path.is_file() or maildir in path.parents or path.suffix in (".key", ".db"):
            continue
        assert not leaks(path.read_bytes().decode("utf-8", "replace"), forms), f"{path} holds the password"
        scanned += 1
    assert scanned > 5
