"""run/scenario.ScenarioRun without a target: the parts of a scenario that need none."""

from __future__ import annotations

import stat
from pathlib import Path

from labrunner import runfolder
from labrunner.config.model import AccountSpec, CaptureSpec, Profile, Scenario, TargetSpec, Text
from labrunner.executor.local import LocalExecutor
from labrunner.run.manifest import scenario_entry
from labrunner.run.scenario import RunContext, ScenarioRun
from labrunner.secrets import Redactor


def test_a_scenario_without_a_capture_finishes_with_its_transcript(tmp_path: Path) -> None:
    """`capture: {enabled: false}`: no pcap, so no analysis; the scenario still finishes (its
    analysis step once ended in an UnboundLocalError, a bug, when there was no capture file)."""
    profile = Profile(name="p", target=TargetSpec(host="t"), servers={}, account=AccountSpec(address="u@example.org"))
    sc = Scenario(name="nocap", path=tmp_path / "nocap.yaml", title=Text(en="no capture"), objective=Text(),
                  steps=(), capture=CaptureSpec(enabled=False))
    run_dir = tmp_path / "run"
    entry = scenario_entry(sc, runfolder.Manifest(run_id="r1"))
    stages: list[str] = []
    ctx = RunContext(profile, LocalExecutor(), "pw", Redactor(), run_dir)  # no step: nothing runs on it
    finish = ScenarioRun(ctx, sc, entry, stages.append).on_target()
    finish()
    assert stages == ["sessions"]
    assert sorted(entry.files) == [runfolder.TRANSCRIPT]
    assert entry.capture is None and entry.frames is None
    keylog = run_dir / "nocap" / runfolder.KEYLOG
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
