"""The student's own capture as a scenario: its files are checked where they are written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labrunner.config.load import load_lab, load_scenarios
from labrunner.config.model import ImportStep
from labrunner.errors import ConfigError, UsageError
from labrunner.importer import parse_cli
from labrunner.text import in_language

CAPS = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
LAB = "profiles:\n  sandbox: {from_sandbox: true}\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "captures").mkdir()
    (tmp_path / "lab.yaml").write_text(LAB)
    shutil.copy(CAPS / "browser-login.pcap", tmp_path / "captures")
    shutil.copy(CAPS / "browser-login.keys", tmp_path / "captures")
    shutil.copy(CAPS / "smtp-plain.pcapng", tmp_path / "captures")
    (tmp_path / "captures" / "notes.txt").write_text("not a capture\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def scenario(project: Path, step: str, more: str = "") -> list[str] | ImportStep:
    (project / "scenarios" / "mine.yaml").write_text(f"title: mine\nsteps:\n  - import: {step}\n{more}")
    try:
        (sc,) = load_scenarios(load_lab("lab.yaml"), None)
    except ConfigError as err:
        return err.problems
    assert not sc.capture.enabled  # nothing is captured for an imported scenario
    (st,) = sc.steps
    assert isinstance(st, ImportStep)
    return st


def test_an_import_step_resolves_its_files_in_the_project(project: Path) -> None:
    step = scenario(project, "{capture: ../captures/browser-login.pcap, keylog: ../captures/browser-login.keys}")
    assert isinstance(step, ImportStep)
    assert Path(step.capture).resolve() == (project / "captures" / "browser-login.pcap").resolve()
    assert step.keylog and Path(step.keylog).name == "browser-login.keys" and step.project == str(project)
    pcapng = scenario(project, "{capture: ../captures/smtp-plain.pcapng}")
    assert isinstance(pcapng, ImportStep) and pcapng.keylog is None


@pytest.mark.parametrize(("step", "message"), [
    ("{capture: ../captures/none.pcap}", "steps[1].import.capture: no such file: "),
    ("{capture: ../captures/notes.txt}", "steps[1].import.capture: {p}/captures/notes.txt is not a capture file"),
    ("{capture: /etc/hostname}", "steps[1].import.capture: /etc/hostname is outside the project folder"),
    ("{capture: ../captures}", "steps[1].import.capture: {p}/captures is not a file"),
    ("{capture: ../captures/smtp-plain.pcapng, keylog: ../captures/notes.txt}",
     "steps[1].import.keylog: {p}/captures/notes.txt is not a TLS key log"),
    ("{keylog: ../captures/browser-login.keys}", "steps[1].import.capture: missing required key"),
])
def test_a_bad_file_is_one_located_line(project: Path, step: str, message: str) -> None:
    (line,) = scenario(project, step)  # type: ignore[misc]
    assert line.startswith("scenarios/mine.yaml:3:")
    assert message.format(p=project) in line


def test_an_import_step_stands_alone(project: Path) -> None:
    (line,) = scenario(project, "{capture: ../captures/smtp-plain.pcapng}", "  - pop3\n")  # type: ignore[misc]
    assert line.startswith("scenarios/mine.yaml:3:3: steps: an import step stands alone")


def test_import_on_the_command_line(project: Path) -> None:
    steps = parse_cli(["webmail-tls=captures/browser-login.pcap,captures/browser-login.keys"], project)
    step = steps["webmail-tls"]
    assert Path(step.capture) == project / "captures" / "browser-login.pcap"
    assert step.keylog is not None and step.keylog.endswith("browser-login.keys")
    for spec, said in [("webmail-tls", "write SCENARIO=CAPTURE"),
                       ("x=captures/none.pcap", "--import x: capture: no such file"),
                       ("x=captures/notes.txt", "is not a capture file"),
                       ("x=captures/smtp-plain.pcapng,captures/notes.txt", "--import x: keylog: "),
                       ("x=../outside.pcap", "is outside the project folder")]:
        with pytest.raises(UsageError, match=said):
            parse_cli([spec], project)


def test_a_key_log_goes_into_a_pcapng_as_editcap_would(tmp_path: Path) -> None:
    # editcap 4.0 cannot rewrite a pcapng as pcapng: the importer adds the secrets block itself
    import subprocess

    from labrunner.analysis import analyze
    from labrunner.importer import with_secrets

    bare = tmp_path / "bare.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(CAPS / "browser-login.pcap"), str(bare)], check=True)
    assert analyze(bare, lang="en")["capture"]["decryption"] == "none"
    keyed = tmp_path / "keyed.pcapng"
    keyed.write_bytes(with_secrets(bare.read_bytes(), (CAPS / "browser-login.keys").read_bytes()))
    doc = analyze(keyed, lang="en")
    assert doc["capture"]["decryption"] == "embedded" and doc["capture"]["frames"] == 56
    said = [d["text"] for s in in_language(doc, "en")["streams"] for d in s["dialogue"] if d["dir"] == "C"]
    assert any(t.startswith("POST /login HTTP/1.1") for t in said)
    with pytest.raises(UsageError, match="section header is damaged"):
        with_secrets(b"\x0a\x0d\x0d\x0a" + b"\0" * 24, b"CLIENT_RANDOM 00 00\n")
