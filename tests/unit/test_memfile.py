"""tshark's output through a nameless file in memory (analysis/memfile.py), read while a real
process is still writing it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labrunner.analysis import memfile, streams, tshark

pytestmark = pytest.mark.skipif(memfile.open_memory_file() is None, reason="no tmpfs at /dev/shm with O_TMPFILE")

# writes 0..N-1 as lines in bursts with pauses, so the reader catches up and must wait for more
_WRITER = r"""
import os, sys, time
n, burst = int(sys.argv[1]), int(sys.argv[2])
for i in range(0, n, burst):
    os.write(1, b"".join(b"%d\n" % j for j in range(i, min(n, i + burst))))
    time.sleep(0.01)
"""


def _follow(argv: list[str], buffer: int = 1 << 16) -> tuple[io.BufferedReader, memfile.GrowingFile, subprocess.Popen]:
    fd = memfile.open_memory_file()
    assert fd is not None
    proc = subprocess.Popen(argv, stdout=fd)
    raw = memfile.GrowingFile(fd, lambda: proc.poll() is None)
    return io.BufferedReader(raw, buffer), raw, proc


def test_a_file_still_being_written_is_read_whole_and_in_order():
    reader, _, proc = _follow([sys.executable, "-c", _WRITER, "20000", "700"])
    with reader:
        lines = reader.readlines()  # waits at each pause, ends only once the writer has exited
    assert proc.wait() == 0
    assert lines == [b"%d\n" % i for i in range(20000)]


def test_what_was_read_is_given_back_to_the_system():
    """The file would otherwise hold all of tshark's output (as big as the capture) until the end."""
    chunk = 1 << 20
    reader, raw, proc = _follow([sys.executable, "-c", f"import os\nfor _ in range(48): os.write(1, b'x' * {chunk})"])
    with reader:
        got = 0
        while data := reader.read(chunk):
            got += len(data)
        assert got == 48 * chunk
        held = os.fstat(raw.fd).st_blocks * 512
    proc.wait()
    assert held < 20 * chunk  # (without the holes punched: all 48 MiB)


def test_the_file_has_no_name_anyone_could_open(tmp_path):
    """tshark's output holds decrypted mail: a file with no name in any folder, this process's only."""
    before = set(os.listdir(memfile._PLACE))
    reader, raw, proc = _follow([sys.executable, "-c", "import time, os; os.write(1, b'secret\\n'); time.sleep(0.3)"])
    with reader:
        assert reader.readline() == b"secret\n"
        assert set(os.listdir(memfile._PLACE)) == before
        assert os.fstat(raw.fd).st_mode & 0o077 == 0
        # O_EXCL: no name can be given to it, not even through /proc (linkat, AT_SYMLINK_FOLLOW)
        import ctypes

        named = Path(memfile._PLACE) / f"labrunner-test-{os.getpid()}"  # (on the same file system)
        try:
            source = f"/proc/self/fd/{raw.fd}".encode()
            assert ctypes.CDLL(None, use_errno=True).linkat(-100, source, -100, bytes(named), 0x400) == -1
        finally:
            named.unlink(missing_ok=True)
    proc.wait()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_without_a_tmpfs_the_pass_reads_a_pipe(monkeypatch, tmp_path):
    from test_analysis_captures import CAPS

    path = CAPS / "smtps-tls12.pcapng"
    expected = streams.analyze(path, lang="en")
    run = tshark.Pass(path, None, tap=True)
    run.start()
    assert run._growing is not None  # here: the memory file
    run.close()
    monkeypatch.setattr(memfile, "_PLACE", str(tmp_path))  # a disk folder: never used for the output
    assert memfile.open_memory_file() is None
    run = tshark.Pass(path, None, tap=True)
    run.start()
    assert run._growing is None
    run.close()
    assert streams.analyze(path, lang="en") == expected
    assert not list(Path(tmp_path).iterdir())


_NO_SPACE = r"""
import json, sys
from pathlib import Path
from labrunner.analysis import memfile, streams
memfile._PLACE = sys.argv[1]
opened = []
room = memfile.open_memory_file
def opening(need=0):
    would = room(need) is not None  # (as the pass finds it)
    fd = room(0)  # the room not asked for: the tmpfs runs full under tshark
    opened.append([would, fd is not None])
    return fd
memfile.open_memory_file = opening
doc = streams.analyze(Path(sys.argv[2]), lang="en")
print(json.dumps({"doc": doc, "opened": opened, "refused": memfile.refused}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root to mount a tmpfs")
def test_a_tmpfs_that_runs_full_reads_the_capture_again_through_a_pipe(tmp_path):
    """A /dev/shm too small for tshark's output (a container's --shm-size, others' files): tshark
    says there is no space left; the capture is read again through a pipe, the same document."""
    from test_analysis_captures import CAPS

    path = CAPS / "smtps-tls12.pcapng"
    (tmp_path / "shm").mkdir()
    script = 'mount -t tmpfs -o size=4k tmpfs "$1" && exec "$2" -c "$3" "$1" "$4"'
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, "-", str(tmp_path / "shm"), sys.executable, _NO_SPACE,
                          str(path)], capture_output=True, text=True, timeout=120)
    if out.returncode and "mount" in out.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    got = json.loads(out.stdout)
    assert got["refused"] and got["opened"][0] == [False, True] and got["opened"][-1] == [False, False]
    # (the first pass wrote to the tmpfs, which ran full; the last one read a pipe; asked for the
    # room its output may take, none would have used so small a tmpfs)
    assert got["doc"] == json.loads(json.dumps(streams.analyze(path, lang="en")))
