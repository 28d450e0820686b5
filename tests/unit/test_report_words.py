"""F2 and D1: the student's words are redacted before the manifest keeps them, and `labrunner
report` renders the words the project holds now, redacted with the secret it can have and by
shape without it; a handed-in folder renders the manifest's copies, redacted again."""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labrunner.config.load import load_lab, load_scenarios
from labrunner.config.model import Profile, TargetSpec
from labrunner.report.scrub import scrub_text
from labrunner.secrets import REDACTED, Redactor

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "sandbox-run"
CODE = "zujnuhmaarpybbbb"  # the seed report's authorization code
USER = "877261793@qq.com"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PLAIN_BLOB = b64(b"\0" + USER.encode() + b"\0" + CODE.encode())
AUTHZ_BLOB = b64(USER.encode() + b"\0" + USER.encode() + b"\0" + CODE.encode())
# Every credential-shaped way a student may paste the code; the plain code stands alone last.
PASTED = f"""我的抓包里看到：
```
C: AUTH PLAIN {PLAIN_BLOB}
S: 235 2.7.0 Authentication successful
```
> C: AUTH LOGIN
> S: 334 VXNlcm5hbWU6
> C: {b64(USER.encode())}
> S: 334 UGFzc3dvcmQ6
> C: {b64(CODE.encode())}

- PASS {CODE}
- `a1 LOGIN {USER} {CODE}`
- 授权码：{CODE}
- Authorization: Basic {b64(f"{USER}:{CODE}".encode())}
- the blob alone: {AUTHZ_BLOB}
"""
SHAPED = [PLAIN_BLOB, b64(CODE.encode()), f"PASS {CODE}", f"LOGIN {USER} {CODE}", f"：{CODE}",
          b64(f"{USER}:{CODE}".encode()), AUTHZ_BLOB]


def forms(text: str) -> list[str]:
    """Which forms of CODE ``text`` holds (also HTML-unescaped)."""
    found = []
    for shown in (text, html.unescape(text)):
        found += [f for f in (CODE, b64(CODE.encode()), PLAIN_BLOB, CODE[2:12]) if f in shown]
    return found


def test_credential_shapes_in_free_text_are_redacted_and_prose_is_kept():
    out = scrub_text(PASTED)
    for shape in SHAPED:
        assert shape not in out, shape
    assert out.count(REDACTED) == 7
    assert "S: 334 UGFzc3dvcmQ6" in out and "S: 235 2.7.0" in out  # the dialogue around is kept
    assert f"> C: {b64(USER.encode())}" in out  # the user name is not a secret
    for pasted in (f"334 UGFzc3dvcmQ6\n{b64(CODE.encode())}", f"+ UGFzc3dvcmQ6\n\n  {b64(CODE.encode())}",
                   f"> 334 Password:\n> {CODE}", f"1. PASS {CODE}", f"3) C: PASS {CODE}",
                   f"export QQ_AUTH_CODE={CODE}", f"我的授权码是{CODE}，", f"授权码 {CODE}"):
        assert CODE not in scrub_text(pasted) and b64(CODE.encode()) not in scrub_text(pasted), pasted
    for kept in ("235 2.7.0 ok\n1. 334 is a prompt", "密码是明文传输的，授权码（authorization code）要保密"):
        assert scrub_text(kept) == kept
    prose = ("The AUTH PLAIN command sends the password; the LOGIN command too.\n"
             "pass the test, then 334 VXNlcm5hbWU6 asks for the user\nPassword: (see above)")
    assert scrub_text(prose) == prose


def test_the_run_writes_redacted_words_into_the_manifest(tmp_path: Path):
    from labrunner.report.words import clean_record
    from labrunner.run.manifest import new_manifest, scenario_entry

    project = _project(tmp_path, notes=PASTED, reflections=f"MY-OWN-WORDS 我的授权码是 {CODE}\n\n{PASTED}")
    lab = load_lab(project / "lab.yaml")
    redactor = Redactor()
    redactor.add(CODE, users=[USER])
    profile = Profile(name="p", target=TargetSpec(host="t"), servers={}, account=lab.profiles["sandbox"].account)
    record = new_manifest(lab, profile, "r1", "zh")
    clean_record(record, redactor)  # as run_lab does before writing it
    record.scenarios = [scenario_entry(sc, record, redactor) for sc in load_scenarios(lab, None)]
    manifest = record.to_json()
    text = json.dumps(manifest, ensure_ascii=False)
    assert not forms(text), forms(text)
    assert "MY-OWN-WORDS" in text and manifest["report"]["student"]["name"]["zh"] == "李四"
    # a section another part of labrunner added to lab.yaml's report (5.1) comes through, redacted
    assert manifest["problems"]["zh"].startswith("PROBLEMS-SECTION MY-OWN-WORDS")


def _project(root: Path, *, notes: str, reflections: str = "MY-OWN-WORDS") -> Path:
    """A project with the recorded sandbox run in output/, its profile's secret in $LR_CODE."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "scenarios", root / "scenarios")
    shutil.copytree(FIXTURE, root / "output")
    (root / "scenarios" / "plain-smtp.yaml").write_text(
        (REPO / "scenarios" / "plain-smtp.yaml").read_text("utf-8").split("\nnotes:")[0]
        + "\nnotes:\n  zh: |\n" + "".join(f"    {line}\n" for line in notes.splitlines()), "utf-8")
    (root / "lab.yaml").write_text(json.dumps({
        "default_profile": "sandbox",
        "report": {"student": {"name": "李四", "id": "2020000002", "class": "计科"},
                   "reflections": {"zh": reflections, "en": reflections},
                   "problems": {"zh": "PROBLEMS-SECTION " + reflections}},
        "profiles": {"sandbox": {"target": {"host": "192.0.2.7", "user": "u"},
                                 "servers": {"smtp": {"host": "smtp.lab.test", "plain": 25, "starttls": 587,
                                                      "tls": 465},
                                             "pop3": {"host": "pop.lab.test", "plain": 110, "tls": 995},
                                             "imap": {"host": "imap.lab.test", "plain": 143, "tls": 993},
                                             "web": {"host": "mail.lab.test", "tls": 443}},
                                 "account": {"address": USER, "secret": {"env": "LR_CODE", "prompt": False}}}},
    }, ensure_ascii=False), "utf-8")
    return root


def _report(cwd: Path, *args: str, code: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "LR_CODE"}
    if code is not None:
        env["LR_CODE"] = code
    res = subprocess.run([sys.executable, "-m", "labrunner", "report", "--no-pdf", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not forms(res.stdout + res.stderr)
    return res.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("words"), notes="EDITED-AFTER-THE-RUN\n\n" + PASTED + f"\n{CODE}\n")


def test_report_renders_the_notes_as_the_project_holds_them_now_redacted(project: Path):
    _report(project, "-c", "lab.yaml", code=CODE)
    page = (project / "output" / "20261126-154056" / "report.html").read_text("utf-8")
    assert "EDITED-AFTER-THE-RUN" in page and "MY-OWN-WORDS" in page and "李四" in page
    assert "PROBLEMS-SECTION" in page
    assert "张三" not in page  # the cover data of the manifest: replaced by lab.yaml's
    assert not forms(page), forms(page)
    manifest = (project / "output" / "20261126-154056" / "manifest.json").read_text("utf-8")
    assert "EDITED-AFTER-THE-RUN" not in manifest  # the run's record is left as it was


def test_without_the_secret_the_shapes_are_still_redacted(project: Path):
    _report(project, "-c", "lab.yaml")  # $LR_CODE unset, no terminal: no prompt either
    page = html.unescape((project / "output" / "20261126-154056" / "report.html").read_text("utf-8"))
    assert "EDITED-AFTER-THE-RUN" in page
    for shape in SHAPED:
        assert shape not in page, shape
    assert CODE in page  # alone on its line nothing says it is a code: only the secret finds it


def test_a_handed_in_folder_renders_the_manifest_words_redacted_again(project: Path, tmp_path: Path):
    copy = tmp_path / "2021210999-lab5"
    shutil.copytree(project / "output" / "20261126-154056", copy)
    manifest = json.loads((copy / "manifest.json").read_text("utf-8"))
    manifest["scenarios"][1]["notes"] = {"zh": "HANDED-IN\n" + PASTED, "en": ""}  # an older labrunner's
    manifest["reflections"] = {"zh": f"C: AUTH PLAIN {PLAIN_BLOB}", "en": ""}
    (copy / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), "utf-8")
    _report(tmp_path, str(copy), code=CODE)  # no lab.yaml here: the folder alone
    page = html.unescape((copy / "report.html").read_text("utf-8"))
    assert "HANDED-IN" in page and "EDITED-AFTER-THE-RUN" not in page
    for shape in SHAPED:
        assert shape not in page, shape


def test_the_reminder_names_only_what_still_holds_template_text(project: Path):
    """D1: notes filled in after a run (the manifest still has the template's) are not named."""
    from labrunner.cli import _template_text_left

    lab = load_lab(project / "lab.yaml")
    todo = _template_text_left(lab, project / "output" / "20261126-154056", "zh") or ""
    assert "处模板文字" in todo and "mail-client.yaml: notes.zh" in todo
    assert "plain-smtp" not in todo and "reflections" not in todo  # both hold the student's words now


def test_a_class_run_report_takes_the_students_own_cover_data(project: Path, tmp_path: Path):
    root = tmp_path / "class"
    shutil.copytree(project, root)
    lab = json.loads((root / "lab.yaml").read_text("utf-8"))
    lab["inventory"] = [{"name": "s42", "sandbox": 2, "profile": "sandbox",
                         "report": {"student": {"name": "赵六", "id": "42"}}}]
    lab["profiles"]["sandbox"] = {"from_sandbox": True, "instance": "nosuch"}  # no sandbox: no secret
    (root / "lab.yaml").write_text(json.dumps(lab, ensure_ascii=False), "utf-8")
    (root / "output" / "students" / "s42").mkdir(parents=True)
    shutil.move(root / "output" / "20261126-154056", root / "output" / "students" / "s42" / "20261126-154056")
    _report(root, "-c", "lab.yaml", "output/students/s42/20261126-154056")
    page = (root / "output" / "students" / "s42" / "20261126-154056" / "report.html").read_text("utf-8")
    assert "赵六" in page and "李四" not in page and "EDITED-AFTER-THE-RUN" in page
    assert PLAIN_BLOB not in page


def test_report_asks_for_the_password_only_on_a_terminal_and_says_why(project: Path, tmp_path: Path):
    """No variable set: on a terminal the password is asked (after a line saying why) and the plain
    code in the notes is redacted; without a terminal nothing is asked (the tests above)."""
    import pty

    root = tmp_path / "tty"
    shutil.copytree(project, root)
    lab = json.loads((root / "lab.yaml").read_text("utf-8"))
    lab["profiles"]["sandbox"]["account"]["secret"] = {"env": "LR_CODE", "prompt": True}
    (root / "lab.yaml").write_text(json.dumps(lab, ensure_ascii=False), "utf-8")
    env = {k: v for k, v in os.environ.items() if k != "LR_CODE"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: labrunner on the terminal
        os.chdir(root)
        os.execvpe(sys.executable, [sys.executable, "-m", "labrunner", "report", "--no-pdf", "-c", "lab.yaml"], env)
    said = b""
    answered = False
    while True:  # no time limit of its own: a loaded machine may take long to start labrunner
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child is gone
            break
        if not chunk:
            break
        said += chunk
        # answered once the prompt itself is there (getpass flushes what was typed before it)
        last = said.split(b"\n")[-1].strip(b"\r")
        if not answered and last.startswith(b"password") and last.endswith(b": "):
            os.write(fd, CODE.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    text = said.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert answered and "asked only to redact it" in text and CODE not in text
    page = (root / "output" / "20261126-154056" / "report.html").read_text("utf-8")
    assert "EDITED-AFTER-THE-RUN" in page and CODE not in html.unescape(page)


def test_a_screenshot_added_to_the_notes_after_the_run_is_embedded(project: Path, tmp_path: Path):
    import struct
    import zlib

    root = tmp_path / "img"
    shutil.copytree(project, root)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))
    (root / "scenarios" / "shots").mkdir()
    (root / "scenarios" / "shots" / "qq.png").write_bytes(png)
    sc = root / "scenarios" / "plain-smtp.yaml"
    sc.write_text(sc.read_text("utf-8").replace("EDITED-AFTER-THE-RUN", "EDITED-AFTER-THE-RUN ![设置](shots/qq.png)"),
                  "utf-8")
    _report(root, "-c", "lab.yaml")
    page = (root / "output" / "20261126-154056" / "report.html").read_text("utf-8")
    assert 'src="data:image/png;base64,' in page and "shots/qq.png" not in page
