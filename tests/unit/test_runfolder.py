import json
import os
import stat
import subprocess
import sys

import pytest

from labrunner import runfolder
from labrunner.errors import ExitStatus, LabError, UsageError


def _manifest(run_dir, entries):
    run_dir.mkdir(parents=True, exist_ok=True)
    runfolder.write_json(run_dir / "manifest.json", {"run_id": run_dir.name, "scenarios": entries})


def test_write_json_is_atomic_and_keeps_mode(tmp_path):
    target = tmp_path / "a" / "keylog.json"
    runfolder.write_json(target, {"x": "中文"}, mode=0o600)
    assert json.loads(target.read_text("utf-8")) == {"x": "中文"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["keylog.json"]  # no temporary left


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "manifest.json"
    runfolder.write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        runfolder.write_json(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1}


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "..", ".hidden", "a/b", "", "x" * 80])
def test_scenario_dir_refuses_escaping_names(tmp_path, name):
    with pytest.raises(UsageError):
        runfolder.scenario_dir(tmp_path, name)


def test_scenario_dir_accepts_plain_names(tmp_path):
    assert runfolder.scenario_dir(tmp_path, "telnet-smtp") == (tmp_path / "telnet-smtp").resolve()


def test_latest_results_and_successes(tmp_path):
    _manifest(tmp_path / "20261126-100000", [
        {"name": "a", "status": "passed", "run_id": "20261126-100000"},
        {"name": "b", "status": "passed", "run_id": "20261126-100000"},
    ])
    _manifest(tmp_path / "20261126-110000", [
        {"name": "a", "status": "failed", "run_id": "20261126-110000"},
        # carried over from the first run: not a result of this run
        {"name": "b", "status": "passed", "run_id": "20261126-100000"},
    ])
    last = runfolder.latest_results(tmp_path)
    assert last["a"].status == "failed" and last["b"].run_id == "20261126-100000"
    ok = runfolder.latest_successes(tmp_path)
    assert ok["a"].run_id == "20261126-100000"


def test_damaged_manifests_are_skipped_not_fatal(tmp_path):
    """`list`, `run --failed` and the report's attempts read every earlier manifest: one a hand
    edit or a killed run damaged must not stop them with a traceback."""
    _manifest(tmp_path / "20261126-090000", [{"name": "a", "status": "passed", "run_id": "20261126-090000"}])
    for run_id, content in [("20261126-100000", "{not json"), ("20261126-110000", '{"scenarios": "x"}'),
                            ("20261126-120000", "[1, 2]"),
                            ("20261126-130000",
                             '{"scenarios": [7, {"status": "failed", "run_id": "20261126-130000"}]}')]:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(content)
    _manifest(tmp_path / "20261126-140000", [{"name": "b", "status": "failed", "run_id": "20261126-140000"}])
    assert {k: v.status for k, v in runfolder.latest_results(tmp_path).items()} == {"a": "passed", "b": "failed"}
    assert [r for r, _ in runfolder.own_results(tmp_path, upto="20261126-135959")] == ["20261126-090000"]


def test_resolve_run_latest_and_unknown(tmp_path):
    _manifest(tmp_path / "20261126-100000", [])
    _manifest(tmp_path / "20261126-110000", [])
    assert runfolder.resolve_run(tmp_path, None).name == "20261126-110000"
    runfolder.point_latest(tmp_path, "20261126-100000")
    assert runfolder.resolve_run(tmp_path, None).name == "20261126-100000"
    assert runfolder.resolve_run(tmp_path, "20261126-110000").name == "20261126-110000"
    with pytest.raises(UsageError, match="no run 'nope'"):
        runfolder.resolve_run(tmp_path, "nope")
    with pytest.raises(UsageError, match="no run found"):
        runfolder.resolve_run(tmp_path / "empty", None)


def test_new_run_id_is_unique(tmp_path):
    first = runfolder.new_run_id(tmp_path)
    (tmp_path / first).mkdir()
    assert runfolder.new_run_id(tmp_path) != first


def test_second_run_is_refused_while_first_holds_the_lock(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from labrunner import runfolder\n"
        "with runfolder.run_lock(Path(sys.argv[1])):\n"
        "    print('locked', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(LabError, match=rf"another labrunner run .*pid {holder.pid}") as refused, \
                runfolder.run_lock(tmp_path):
            pass
        assert refused.value.exit_status == ExitStatus.ENVIRONMENT
    finally:
        holder.kill()
        holder.wait()
    with runfolder.run_lock(tmp_path):  # free again once the holder is gone
        assert os.path.exists(tmp_path / ".lock")


def test_running_left_by_a_killed_run_reads_as_interrupted(tmp_path):
    _manifest(tmp_path / "20261126-100000", [{"name": "a", "status": "running", "run_id": "20261126-100000"}])
    assert runfolder.latest_results(tmp_path)["a"].status == "interrupted"
    assert not runfolder.is_locked(tmp_path)
    with runfolder.run_lock(tmp_path):  # while a run holds the folder, "running" is true
        assert runfolder.is_locked(tmp_path)
        assert runfolder.latest_results(tmp_path)["a"].status == "running"


def _victim(tmp_path, name="victim.txt"):
    victim = tmp_path / name
    victim.write_text("precious\n")
    victim.chmod(0o600)
    return victim


def _unchanged(victim):
    return victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_planted_symlinks_at_the_temporary_and_final_names_are_not_written_through(tmp_path):
    # F6: `.NAME.tmp<pid>` was opened with O_CREAT|O_TRUNC (no O_EXCL/O_NOFOLLOW), then chmod'ed
    victim, other = _victim(tmp_path), _victim(tmp_path, "other.txt")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / f".report.html.tmp{os.getpid()}").symlink_to(victim)
    (run_dir / "report.html").symlink_to(other)
    runfolder.write_bytes_atomic(run_dir / "report.html", b"<html>")
    assert _unchanged(victim) and _unchanged(other)
    out = run_dir / "report.html"
    assert not out.is_symlink() and out.read_bytes() == b"<html>" and stat.S_IMODE(out.stat().st_mode) == 0o644


def test_a_planted_name_equal_to_the_fresh_one_is_skipped_not_followed(tmp_path, monkeypatch):
    victim = _victim(tmp_path)
    tokens = iter(["planted", "fresh"])
    monkeypatch.setattr(runfolder.layout.secrets, "token_hex", lambda _n: next(tokens))
    (tmp_path / ".a.json.planted.tmp").symlink_to(victim)
    runfolder.write_json(tmp_path / "a.json", {"v": 1})
    assert _unchanged(victim) and json.loads((tmp_path / "a.json").read_text()) == {"v": 1}
    assert not (tmp_path / ".a.json.fresh.tmp").exists()


def test_a_symlink_at_the_lock_file_is_refused_and_not_written(tmp_path):
    # F6: output/.lock was opened O_RDWR|O_CREAT, truncated and given the pid
    victim = _victim(tmp_path)
    out = tmp_path / "output"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(UsageError, match=r"\.lock is a symbolic link") as refused, runfolder.run_lock(out):
        pass
    assert refused.value.exit_status == ExitStatus.USAGE
    assert _unchanged(victim)
    assert not runfolder.is_locked(out)
    (out / ".lock").unlink()
    os.link(victim, out / ".lock")  # a hard link: same refusal, the victim keeps its content
    with pytest.raises(UsageError, match="not labrunner's lock file"), runfolder.run_lock(out):
        pass
    assert _unchanged(victim)


def test_latest_being_a_real_folder_is_one_clear_error_and_nothing_is_lost(tmp_path):
    # F15/F20: IsADirectoryError (exit 4) and a `.latest.tmp<pid>` symlink left behind
    _manifest(tmp_path / "20261126-100000", [])
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "mine.txt").write_text("kept")
    with pytest.raises(UsageError, match=r"latest is a folder, not the link") as refused:
        runfolder.point_latest(tmp_path, "20261126-100000")
    assert refused.value.exit_status == ExitStatus.USAGE and "mv " in (refused.value.hint or "")
    assert (tmp_path / "latest" / "mine.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261126-100000", "latest"]  # no .latest*.tmp
    (tmp_path / "latest" / "mine.txt").unlink()
    (tmp_path / "latest").rmdir()
    (tmp_path / ".latest.tmp1").symlink_to("20261126-100000")  # an old temporary name: no matter
    runfolder.point_latest(tmp_path, "20261126-100000")
    assert os.readlink(tmp_path / "latest") == "20261126-100000"


def test_a_folder_where_a_file_goes_is_one_clear_error(tmp_path):
    (tmp_path / "report.html").mkdir()
    (tmp_path / "report.html" / "mine.txt").write_text("kept")
    with pytest.raises(UsageError, match=r"report\.html is a folder, where labrunner writes a file") as refused:
        runfolder.write_bytes_atomic(tmp_path / "report.html", b"<html>")
    assert "mv " in (refused.value.hint or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left
    assert (tmp_path / "report.html" / "mine.txt").read_text() == "kept"
