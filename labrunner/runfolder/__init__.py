"""Run folders: where a run's files go (``layout``) and what its documents hold (``records``).

The names of the former ``runfolder`` module stay importable from here.
"""

from labrunner.runfolder.layout import (
    LATEST,
    MANIFEST,
    RUN_ID_RE,
    SAFE_NAME_RE,
    atomic_file,
    check_latest,
    file_entry,
    is_locked,
    latest_results,
    latest_successes,
    new_run_id,
    own_results,
    point_latest,
    read_json,
    resolve_run,
    run_lock,
    runs,
    scenario_dir,
    sha256_file,
    write_bytes_atomic,
    write_json,
)

__all__ = [
    "LATEST", "MANIFEST", "RUN_ID_RE", "SAFE_NAME_RE", "atomic_file", "check_latest", "file_entry",
    "is_locked", "latest_results", "latest_successes", "new_run_id", "own_results", "point_latest",
    "read_json", "resolve_run", "run_lock", "runs", "scenario_dir", "sha256_file", "write_bytes_atomic",
    "write_json",
]
