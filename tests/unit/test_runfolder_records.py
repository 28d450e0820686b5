"""manifest.json as typed records: one reader for old, damaged and hostile folders (issue 19
item 1, security review F15 and F13): a damaged manifest is one line naming the field (exit 2),
never an internal error (exit 4), and no manifest makes labrunner read a file outside its run."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labrunner import cli
from labrunner.errors import ExitStatus, UsageError
from labrunner.report.context import build_context
from labrunner.runfolder import Manifest, ManifestError, ScenarioEntry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RUN = FIXTURES / "run" / "20261126-141500"
SANDBOX_RUN = FIXTURES / "sandbox-run" / "20261126-154056"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copytree(RUN.parent, tmp_path / "output")
    return tmp_path / "output" / RUN.name


def _fixture(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_to_json_writes_what_from_json_read() -> None:
    for folder in (RUN, SANDBOX_RUN):
        raw = _fixture(folder)
        manifest = Manifest.from_json(raw)
        assert Manifest.from_json(manifest.to_json()) == manifest
        raw["report"].pop("templates")  # an older labrunner's: never read again (F3)
        _holds(manifest.to_json(), raw)  # (and the newer keys, with their defaults)


def _holds(written: Any, original: Any) -> None:
    if isinstance(original, dict):
        for key, value in original.items():
            _holds(written[key], value)
    elif isinstance(original, list):
        assert len(written) == len(original)
        for w, o in zip(written, original, strict=True):
            _holds(w, o)
    else:
        assert written == original


def test_an_old_folder_without_the_newer_keys_reads_with_defaults() -> None:
    manifest = Manifest.from_json({"scenarios": [{"name": "pop3", "notes": "我的笔记"}]})
    entry = manifest.scenarios[0]
    assert (entry.dir, entry.status, entry.files, entry.origin) == ("pop3", "running", {}, None)
    assert entry.notes.pick("en") == "我的笔记" and not manifest.target and manifest.run_id == ""


# --- every place of the manifest, every wrong type ---------------------------------------------


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k)
            yield from _places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*path, i)
            yield from _places(v, (*path, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    if value is _DELETE:
        del doc[path[-1]]
    else:
        doc[path[-1]] = value


_DELETE = object()
REPLACEMENTS = [7, -1, 2.5, float("nan"), float("inf"), 10**10, 10**400, True, "x", "", [], [1, "a"], {},
                {"zh": 3}, None, "\ud800", _DELETE]


@pytest.mark.parametrize("replacement", REPLACEMENTS, ids=lambda r: "delete" if r is _DELETE else repr(r)[:12])
def test_every_field_changed_to_any_type_reads_or_names_the_field(replacement: Any) -> None:
    base = _fixture(RUN)
    places = list(_places(base))
    assert len(places) > 150
    refused = 0
    for path in places:
        doc = copy.deepcopy(base)
        _set(doc, path, replacement)
        try:
            Manifest.from_json(doc, "m.json")
        except ManifestError as err:
            refused += 1
            line = str(err)
            assert "\n" not in line and line.startswith("m.json: "), line
            named = ".".join(str(p) for p in path[:2] if isinstance(p, str))
            assert named.split(".")[0] in line or "scenarios[" in line, (path, line)
            assert err.exit_status == ExitStatus.USAGE and err.hint
    if replacement not in (None, _DELETE):
        assert refused > 20  # a wrong type is seen, not passed on to the report


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "null", "7", '"x"', "{" * 100_000, "\xff\xfe"])
def test_a_manifest_that_is_no_json_object_is_one_line(run_dir: Path, text: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "manifest.json").write_text(text, encoding="utf-8", errors="surrogateescape")
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert err.startswith("labrunner: error: ") and "manifest.json" in err.splitlines()[0]
    assert "Traceback" not in err and "internal error" not in err


# The security review's hand-edited manifests (F15: 11 of its 22 ended in "internal error", exit
# 4), and more: `labrunner report` says which field is wrong, exit 2.
F15 = {
    "dir an int": (lambda m: m["scenarios"][0].update(dir=7), "scenarios[0].dir"),
    "files a list": (lambda m: m["scenarios"][0].update(files=[1]), "scenarios[0].files"),
    "files a string value": (lambda m: m["scenarios"][0]["files"].update({"analysis.json": "x"}),
                             "scenarios[0].files.analysis.json"),
    "capture a list": (lambda m: m["scenarios"][0].update(capture=[]), "scenarios[0].capture"),
    "report a string": (lambda m: m.update(report="x"), "report"),
    "student a list": (lambda m: m["report"].update(student=[]), "report.student"),
    "objectives a list": (lambda m: m.update(objectives=["a"]), "objectives"),
    "objectives.zh a string": (lambda m: m["objectives"].update(zh="a"), "objectives.zh"),
    "target a string": (lambda m: m.update(target="x"), "target"),
    "tools a list": (lambda m: m["target"].update(tools=["tcpdump"]), "target.tools"),
    "local a string": (lambda m: m.update(local="x"), "local"),
    "local tools a list": (lambda m: m["local"].update(tools=[1]), "local.tools"),
    "scenarios an object": (lambda m: m.update(scenarios={}), "scenarios"),
    "a scenario a string": (lambda m: m["scenarios"].insert(0, "x"), "scenarios[0]"),
    "status an int": (lambda m: m["scenarios"][1].update(status=1), "scenarios[1].status"),
    "status unknown": (lambda m: m["scenarios"][1].update(status="hacked"), "scenarios[1].status"),
    "name a list": (lambda m: m["scenarios"][0].update(name=["a"]), "scenarios[0].name"),
    "name a path": (lambda m: m["scenarios"][0].update(name="../x"), "scenarios[0]"),
    "title an int": (lambda m: m["scenarios"][0].update(title=3), "scenarios[0].title"),
    "notes a list": (lambda m: m["scenarios"][0].update(notes=["a"]), "scenarios[0].notes"),
    "notes.zh an object": (lambda m: m["scenarios"][0]["notes"].update(zh={}), "scenarios[0].notes.zh"),
    "run_id an int": (lambda m: m.update(run_id=5), "run_id"),
    "duration a string": (lambda m: m["scenarios"][0].update(duration="1s"), "scenarios[0].duration"),
    "frames negative": (lambda m: m["scenarios"][0].update(frames=-3), "scenarios[0].frames"),
    "packets a float": (lambda m: m["scenarios"][0]["capture"].update(packets=1.5), "scenarios[0].capture.packets"),
    "lang an int": (lambda m: m.update(lang=1), "lang"),
    "reflections a list": (lambda m: m.update(reflections=[]), "reflections"),
    "error an object": (lambda m: m["scenarios"][4].update(error={}), "scenarios[4].error"),
    "addresses a string": (lambda m: m["target"].update(addresses="eth0"), "target.addresses"),
    "sha256 an int": (lambda m: m["scenarios"][0]["files"]["analysis.json"].update(sha256=1),
                      "scenarios[0].files.analysis.json.sha256"),
    "size a string": (lambda m: m["scenarios"][0]["files"]["analysis.json"].update(size="9"),
                      "scenarios[0].files.analysis.json.size"),
    "reused a string": (lambda m: m["scenarios"][1].update(reused="yes"), "scenarios[1].reused"),
    "attempts an object": (lambda m: m["scenarios"][2].update(attempts={}), "scenarios[2].attempts"),
    "a lone surrogate": (lambda m: m["report"].update(school="\udcff"), "report.school"),
    "a lone surrogate in notes": (lambda m: m["scenarios"][0]["notes"].update(zh="x \ud800"),
                                  "scenarios[0].notes.zh"),
    # F13: a file or folder named by path
    "files an absolute path": (lambda m: m["scenarios"][0]["files"].update({"/etc/shadow": {}}),
                               "scenarios[0].files"),
    "files with ..": (lambda m: m["scenarios"][0]["files"].update({"../../x": {}}), "scenarios[0].files"),
    "dir absolute": (lambda m: m["scenarios"][0].update(dir="/etc"), "scenarios[0].dir"),
    "dir with ..": (lambda m: m["scenarios"][0].update(dir="../other/telnet-smtp"), "scenarios[0].dir"),
    "dir deeper": (lambda m: m["scenarios"][0].update(dir="a/b/c"), "scenarios[0].dir"),
}


@pytest.mark.parametrize("kind", list(F15))
def test_a_hand_edited_manifest_is_one_line_naming_the_field(
        run_dir: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    change, field = F15[kind]
    doc = _fixture(run_dir)
    change(doc)
    (run_dir / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == ExitStatus.USAGE
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.startswith(f"labrunner: error: {run_dir / 'manifest.json'}: {field}"), first
    assert all("hint" in line or line.startswith("  ") for line in rest), rest
    assert not (run_dir / "report.html").exists()


# --- F13: nothing outside the run folder is read or hashed ----------------------------------------


def test_a_result_kept_beside_the_run_folder_by_an_older_labrunner_is_not_read(run_dir: Path) -> None:
    # an older labrunner wrote "dir": "<other run>/<name>" for a reused result; such a folder
    # could be another student's, unzipped next to this one
    other = run_dir.parent / "20261126-120000" / "smtp-starttls"
    shutil.copytree(run_dir / "smtp-starttls", other)
    doc = _fixture(run_dir)
    doc["scenarios"][1]["dir"] = "20261126-120000/smtp-starttls"
    (run_dir / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    sc = next(s for s in build_context(run_dir, lang="en")["scenarios"] if s["name"] == "smtp-starttls")
    assert sc["streams"] == [] and sc["files"] == [] and sc["transcript"] is None
    assert "not in this run folder" in sc["analysis_note"] and "20261126-120000/smtp-starttls" in sc["analysis_note"]
    # the same form naming this run's own folder (what every older manifest says) is read
    doc["scenarios"][1]["dir"] = f"{run_dir.name}/smtp-starttls"
    (run_dir / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")
    sc = next(s for s in build_context(run_dir, lang="en")["scenarios"] if s["name"] == "smtp-starttls")
    assert sc["streams"] and all(f["ok"] for f in sc["files"])


def test_links_out_of_the_run_folder_are_not_followed(run_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run_dir / "pop3-retrieve", elsewhere)
    shutil.rmtree(run_dir / "pop3-retrieve")
    (run_dir / "pop3-retrieve").symlink_to(elsewhere)  # the whole scenario folder
    (run_dir / "telnet-smtp" / "transcript.json").unlink()
    (run_dir / "telnet-smtp" / "transcript.json").symlink_to(elsewhere / "transcript.json")
    (run_dir / "telnet-smtp" / "keylog.txt").symlink_to(secret)  # listed by the report unasked
    ctx = build_context(run_dir, lang="en")
    pop3 = next(s for s in ctx["scenarios"] if s["name"] == "pop3-retrieve")
    assert pop3["streams"] == [] and pop3["files"] == [] and "not in this run folder" in pop3["analysis_note"]
    telnet = next(s for s in ctx["scenarios"] if s["name"] == "telnet-smtp")
    assert telnet["transcript"] is None and telnet["steps"] == []
    files = {f["name"]: f for f in telnet["files"]}
    outside = "points outside the run folder: not read"
    assert files["transcript.json"]["check"] == files["keylog.txt"]["check"] == outside
    assert files["keylog.txt"]["sha256"] is None and files["keylog.txt"]["size"] is None


def test_a_damaged_earlier_manifest_does_not_stop_the_history(tmp_path: Path) -> None:
    from labrunner import runfolder

    (tmp_path / "20261126-100000").mkdir()
    (tmp_path / "20261126-100000" / "manifest.json").write_text('{"scenarios": [{"name": "a", "dir": 7}]}')
    assert runfolder.latest_results(tmp_path) == {}


def test_entries_are_records_with_a_folder_inside_the_run(run_dir: Path) -> None:
    entry = ScenarioEntry(name="pop3")
    assert entry.folder(run_dir) == (run_dir / "pop3", None)
    with pytest.raises(UsageError):
        Manifest.read(run_dir / "nope")


# --- one report, one lab (issue 15, student-ta review D3) ---------------------------------------


SAME = {"profile": "sandbox", "target": "10.77.0.2", "sandbox": "lab", "built": "2026-11-26T14:00:00+00:00"}


def _origins(run_dir: Path, *origins: dict[str, Any] | None) -> None:
    doc = _fixture(run_dir)
    doc["origin"] = SAME
    for entry, origin in zip(doc["scenarios"], origins, strict=False):
        if origin is not None:
            entry["origin"] = origin
    (run_dir / "manifest.json").write_text(json.dumps(doc), encoding="utf-8")


def test_a_report_mixing_profiles_is_refused_naming_the_sections(
        run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = {"profile": "sandbox", "target": "10.77.0.2", "sandbox": "lab", "built": "2026-11-26T14:00:00+00:00"}
    other_instance = {**same, "sandbox": "htr"}
    _origins(run_dir, same, {"profile": "myecs", "target": "203.0.113.7", "sandbox": None}, same, other_instance)
    assert cli.main(["report", str(run_dir), "--no-pdf"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "mix results of different labs" in err and "smtp-starttls (profile myecs, target 203.0.113.7)" in err
    assert "https-webmail (profile sandbox, sandbox htr built 2026-11-26T14:00" in err and "--allow-mixed" in err
    assert not (run_dir / "report.html").exists()
    assert cli.main(["report", str(run_dir), "--no-pdf", "--allow-mixed", "--lang", "en"]) == 0
    html = (run_dir / "report.en.html").read_text(encoding="utf-8")  # beside the run's own language
    assert "run 20261126-140210, profile myecs" in html
    assert "run 20261126-141500, profile sandbox (sandbox htr, built 2026-11-26T14:00:00+00:00)" in html


def test_one_lab_renders_and_says_which_run_made_each_section(run_dir: Path) -> None:
    same = {"profile": "sandbox", "target": "10.77.0.2", "sandbox": "lab", "built": "2026-11-26T14:00:00+00:00"}
    # an older entry knows only its profile, a sandbox rebuilt since is the same lab: no conflict
    _origins(run_dir, same, {"profile": "sandbox"}, {**same, "built": "2026-11-27T08:00:00+00:00"})
    scenarios = {sc["name"]: sc for sc in build_context(run_dir, lang="zh")["scenarios"]}
    assert scenarios["smtp-starttls"]["produced_by"] == "运行 20261126-140210，环境配置 sandbox"
    assert scenarios["telnet-smtp"]["produced_by"] == \
        "运行 20261126-141500，环境配置 sandbox（沙箱 lab，构建于 2026-11-26T14:00:00+00:00）"


def test_a_run_records_the_failed_attempts_so_its_folder_needs_no_neighbour(tmp_path: Path) -> None:
    from labrunner import runfolder
    from labrunner.run.manifest import record_attempts

    def run(run_id: str, status: str, error: str | None = None) -> None:
        runfolder.Manifest(run_id=run_id, scenarios=[
            ScenarioEntry(name="pop3", run_id=run_id, status=status, error=error)]).write(tmp_path / run_id)

    run("20261126-100000", "failed", "POP3 PASS: -ERR [AUTH] Authentication failed.")
    run("20261126-110000", "passed")
    manifest = runfolder.Manifest.read(tmp_path / "20261126-110000")
    record_attempts(manifest, tmp_path)
    assert [(a.run_id, a.status) for a in manifest.scenarios[0].attempts] == [
        ("20261126-100000", "failed"), ("20261126-110000", "passed")]
    manifest.write(tmp_path / "20261126-110000")
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(tmp_path / "20261126-110000", moved)
    shutil.rmtree(tmp_path / "20261126-100000")  # the neighbour is gone: the copy still knows
    problems = build_context(moved, lang="en")["problems"]
    assert problems[0]["lines"] == ["Failed in run 20261126-100000: POP3 PASS: -ERR [AUTH] Authentication failed."]
    assert problems[0]["outcome"] == "A later retry in run 20261126-110000 passed."


def test_fifos_in_a_run_folder_do_not_hang_the_report(run_dir: Path, tmp_path: Path) -> None:
    import os

    (run_dir / "telnet-smtp" / "analysis.json").unlink()
    os.mkfifo(run_dir / "telnet-smtp" / "analysis.json")
    sc = next(s for s in build_context(run_dir, lang="en")["scenarios"] if s["name"] == "telnet-smtp")
    assert "not a file" in sc["analysis_note"]
    (run_dir / "manifest.json").unlink()
    os.mkfifo(run_dir / "manifest.json")
    with pytest.raises(ManifestError, match="is not a file"):
        Manifest.read(run_dir)
