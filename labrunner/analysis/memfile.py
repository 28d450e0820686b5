"""tshark's output through a file in memory instead of a pipe.

Through a pipe, tshark's pass over a capture with TLS costs ~20 % more of its own time than
the same pass writing to a file (bench/README.md, "the pipe"): its output is as big as the
capture (the decrypted bytes), and each of its ~10 000 writes wakes the reader on the other core and
waits on the pipe's 64 KB. So tshark writes to a file that has no name (``O_TMPFILE``) on a
tmpfs (memory, never a disk: the output holds decrypted mail), and the analysis reads the file
as it grows, from its own offset (``os.preadv``), waiting a moment at its end while tshark still
runs. What was read is given back to the system as the reading goes on (a hole punched in the
file every MiB), so the file holds only what tshark is ahead by. Without such a place (no tmpfs
at /dev/shm, a kernel without O_TMPFILE, less room there than the output could take), or once
the tmpfs ran full in this process (tshark says so: the pass is read again), a pipe. (Like any
memory, a tmpfs's pages may go to swap under memory pressure.)
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable

# where the file lives: a tmpfs (memory), checked in /proc/self/mountinfo
_PLACE = "/dev/shm"
_GIVE_BACK = 1 << 20  # bytes read before the part already read is given back (a hole punched)
refused = False  # the tmpfs ran full once in this process: pipes from then on (tshark.Pass._judge)


def _on_tmpfs(folder: str) -> bool:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == folder and right.split()[:1] == ["tmpfs"]:
                    return True
    except OSError:
        pass
    return False


def open_memory_file(room: int = 0) -> int | None:
    """A new file with no name on a tmpfs, readable and writable by this process only (O_EXCL:
    it can never be given a name, not even through /proc), with at least ``room`` bytes free
    there; None when there is no such place (the caller then uses a pipe)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if refused or not flag or not _on_tmpfs(_PLACE):
        return None
    try:
        st = os.statvfs(_PLACE)
        if st.f_bavail * st.f_frsize < room:
            return None
        return os.open(_PLACE, flag | os.O_RDWR | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return None


class GrowingFile(io.RawIOBase):
    """The memory file tshark writes, read from the start as it grows; its end is the end of
    tshark's output once ``running()`` says tshark has exited (everything it wrote is in the
    file by then). Wrap it in io.BufferedReader: lines and reads then cost what a pipe's do."""

    def __init__(self, fd: int, running: Callable[[], bool]) -> None:
        super().__init__()
        self.fd = fd
        self.running = running
        self.pos = 0
        self._given_back = 0
        self._punch: Callable[[int, int, int, int], int] | None = None

    def readable(self) -> bool:
        return True

    def ready(self, beyond: int = 0) -> bool:
        """Whether tshark has written more than ``beyond`` bytes (its first line is there)."""
        try:
            return os.fstat(self.fd).st_size > beyond
        except OSError:
            return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        pause = 0.0002
        while True:
            ended = not self.running()  # (asked before reading: what it wrote before exiting is there)
            n = os.preadv(self.fd, [buffer], self.pos)
            if n:
                self.pos += n
                if self.pos - self._given_back >= _GIVE_BACK:
                    self._give_back()
                return n
            if ended:
                return 0
            time.sleep(pause)  # tshark is behind: wait for it (a ms at most between looks)
            pause = min(pause * 2, 0.001)

    def _give_back(self) -> None:
        """Free the memory of what was read: punch a hole over it (the file keeps its size)."""
        end = self.pos & ~0xFFFF
        if self._punch is None:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fallocate = libc.fallocate
            fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
            self._punch = fallocate
        # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (tmpfs has both); a failure only keeps the memory
        with contextlib.suppress(OSError):
            self._punch(self.fd, 0x02 | 0x01, 0, end)
        self._given_back = end

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        super().close()
