"""Run folders: ``output/<run-id>/<scenario>/...``, ``manifest.json`` and ``output/latest``.

``latest`` points at the newest run that has a report (``report.html``): the runner moves it
once the report is written, so a run that ended before (a full disk, a crash) leaves it on
the previous usable run; such a run's folder stays, for ``labrunner report RUN-ID``.

Every file is written atomically (a temporary file renamed into place), so an interrupted or
failed stage never leaves a half-written result and never destroys an earlier one. The
temporary file has a fresh random name and is created with ``O_EXCL | O_NOFOLLOW``, and the
rename replaces a symlink at the final name instead of writing through it: a link planted in a
run or output folder (a cloned repository, a folder someone handed in) cannot make labrunner
overwrite or chmod another file. The same holds for the lock file and ``latest``. A run takes
an exclusive lock on the output folder, so two runs cannot write into it at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from labrunner.errors import LabError, UsageError

if TYPE_CHECKING:
    from labrunner.runfolder.records import ScenarioEntry

# The names of a run folder's files, in one place.
MANIFEST = "manifest.json"  # the run: see records.Manifest
REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
# in each scenario's folder
TRANSCRIPT = "transcript.json"  # the client's record (docs/transcript.md)
ANALYSIS = "analysis.json"  # the capture, analysed (docs/analysis.md)
CAPTURE = "capture.pcapng"  # 0600: holds the plaintext AUTH exchange
KEYLOG = "keylog.txt"  # 0600: the TLS session keys
# in the output folder
LATEST = "latest"
LOCK = ".lock"
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}(-\d+)?$")
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_run_id(output_dir: Path) -> str:
    base = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = base, 1
    while (output_dir / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def scenario_dir(run_dir: Path, name: str) -> Path:
    """The folder of one scenario, refusing any name that could leave the run folder."""
    if not SAFE_NAME_RE.match(name) or name in (".", "..") or ".." in name:
        raise UsageError(f"scenario name {name!r} cannot be used as a folder name",
                         hint="use letters, digits, '-', '_' and '.' only")
    path = (run_dir / name).resolve()
    if path.parent != run_dir.resolve():
        raise UsageError(f"scenario name {name!r} would write outside {run_dir}")
    return path


def _fresh(folder: Path, stem: str) -> tuple[Path, int]:
    """A new file in ``folder`` (a fresh random name, O_EXCL | O_NOFOLLOW), open for writing."""
    for _ in range(100):
        tmp = folder / f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a fresh temporary file beside it, renamed onto
    ``path`` when the block ends without an exception (removed otherwise). A symlink already at
    ``path`` is replaced, never followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        tmp, fd = _fresh(path.parent, path.name)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, mode)  # os.open's mode is filtered by the umask
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise LabError(f"disk full while writing {path}; earlier results are intact",
                           hint="free some space and run again") from exc
        if path.is_dir() and not path.is_symlink():
            raise UsageError(f"{path} is a folder, where labrunner writes a file",
                             hint=f"move it away (mv {path} {path}.old) and try again") from None
        raise LabError(f"cannot write {path}: {exc.strerror or exc}",
                       hint="check the folder's permissions and free space") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    with atomic_file(path, mode=mode) as fh:
        fh.write(data)


def write_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def link_tree(source: Path, dest: Path) -> None:
    """``dest`` as a copy of the folder ``source`` made of hard links (copies where a link cannot
    be made: another file system): a run's own copy of a result it reuses, costing no space.
    Symbolic links in ``source`` are left out, never followed."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(source):
        target = dest / entry.name
        if entry.is_symlink():
            continue
        if entry.is_dir():
            link_tree(Path(entry.path), target)
        elif entry.is_file():
            try:
                os.link(entry.path, target, follow_symlinks=False)
            except OSError:
                shutil.copy2(entry.path, target, follow_symlinks=False)


def check_latest(output_dir: Path) -> None:
    """Refuse an ``output/latest`` that is not the symlink labrunner keeps (a real folder)."""
    link = output_dir / LATEST
    if link.exists() and not link.is_symlink():
        raise UsageError(f"{link} is a {'folder' if link.is_dir() else 'file'}, not the link to the newest run "
                         "that labrunner keeps there",
                         hint=f"move it away (mv {link} {link}.old), then run again")


def point_latest(output_dir: Path, run_id: str) -> None:
    """Point ``output/latest`` at ``run_id`` (a symlink swapped in by a rename)."""
    check_latest(output_dir)
    for _ in range(100):
        tmp = output_dir / f".{LATEST}.{secrets.token_hex(6)}.tmp"
        try:
            os.symlink(run_id, tmp)
            break
        except FileExistsError:
            continue
    try:
        os.replace(tmp, output_dir / LATEST)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        check_latest(output_dir)  # made a folder meanwhile: say so
        raise


def runs(output_dir: Path) -> list[Path]:
    """Run folders with a manifest, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir()
             if p.is_dir() and not p.is_symlink() and RUN_ID_RE.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def resolve_run(output_dir: Path, run: str | None) -> Path:
    """A run folder from a run id, a path, or None for the latest run."""
    if run is None:
        link = output_dir / LATEST
        if link.exists():
            return link.resolve()
        all_runs = runs(output_dir)
        if all_runs:
            return all_runs[-1]
        raise UsageError(f"no run found in {output_dir}", hint="run the experiment first: `labrunner run`")
    candidate = Path(run)
    for path in (candidate, output_dir / run):
        if (path / MANIFEST).is_file():
            return path.resolve()
    names = ", ".join(p.name for p in runs(output_dir)[-5:]) or "none"
    raise UsageError(f"no run {run!r} in {output_dir} (latest runs: {names})",
                     hint="give a run id from `ls output/` or a run folder's path")


def own_results(output_dir: Path, *, upto: str | None = None) -> Iterator[tuple[str, ScenarioEntry]]:
    """(run id, scenario entry) for each result a run produced itself, oldest run first, up to
    the run ``upto`` if given.

    A result a run carried over from an earlier one counts only in the run that produced it;
    an unreadable manifest (a run killed while writing it, a hand edit) is skipped. An entry an
    older labrunner wrote without its origin gets its run's profile.
    """
    from labrunner.runfolder.records import Manifest, Origin

    for run_dir in runs(output_dir):
        if upto is not None and run_dir.name > upto:
            break
        try:
            manifest = Manifest.read(run_dir)
        except (UsageError, RecursionError):
            continue
        for entry in manifest.scenarios:
            if entry.run_id == run_dir.name:
                if entry.origin is None:
                    entry.origin = manifest.origin or Origin(profile=manifest.profile)
                yield run_dir.name, entry


def latest_results(output_dir: Path, *, status: str | None = None) -> dict[str, ScenarioEntry]:
    """For each scenario, its most recent result across all runs (only ``status`` ones if given).

    A result still marked "running" in a run that no process holds any more (killed, power
    cut) is reported as "interrupted".
    """
    results: dict[str, ScenarioEntry] = {}
    live = is_locked(output_dir)
    for _run_id, entry in own_results(output_dir):
        if entry.status == "running" and not live:
            entry.status = "interrupted"
        if status is None or entry.status == status:
            results[entry.name] = entry
    return results


def latest_successes(output_dir: Path) -> dict[str, ScenarioEntry]:
    """For each scenario, its most recent passed result across all runs."""
    return latest_results(output_dir, status="passed")


def is_locked(output_dir: Path) -> bool:
    """Whether a run is writing into ``output_dir`` right now."""
    try:
        fd = os.open(output_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Refuse a second run writing into the same output folder at the same time."""
    output_dir.mkdir(parents=True, exist_ok=True)
    lock_path = output_dir / LOCK
    try:
        # O_NOFOLLOW: a symlink planted at .lock must not make the pid overwrite another file;
        # O_NONBLOCK: nor may a FIFO there hang the run
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise UsageError(f"{lock_path} is a symbolic link, not labrunner's lock file",
                         hint=f"remove it (rm {lock_path}) and run again") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UsageError(f"{lock_path} is not labrunner's lock file (not a plain file with one name)",
                         hint=f"remove it (rm {lock_path}) and run again")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            # the environment's state, not bad input: exit status 3, as the README's table says
            raise LabError(
                f"another labrunner run is writing to {output_dir} (pid {other or '?'})",
                hint="wait for it to finish, or use another output folder",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
