"""Packet capture on the target host with tcpdump, streamed back over the executor.

tcpdump runs on the target inside a small sh wrapper (``tcpdump -U -w -``); its pcap output
comes back over the SSH channel and is written locally as it arrives, so a dropped connection
loses nothing already received. The wrapper kills tcpdump with SIGTERM as soon as its stdin
reaches EOF, which happens both when we stop the capture (we close stdin) and when the
connection dies (sshd closes the pipe): tcpdump then flushes and exits, and nothing stays on
the target. SIGTERM rather than SIGINT, because background jobs of a non-interactive sh
ignore SIGINT.

Files in the scenario folder, all created 0600 whatever the umask (captures may hold
passwords of plain-text sessions):

``capture.pcap``     the raw stream while capturing (removed once converted)
``capture.pcapng``   the result; TLS key logs embedded as decryption secrets

Privilege: nothing runs as root on the target, and no sudo is used. tcpdump needs only
``cap_net_raw`` and ``cap_net_admin``, which ``setup_command`` gives it as file capabilities,
runnable by one group (``labrunner-cap``) the SSH user joins; the mechanism Debian's
wireshark-common uses for dumpcap. Every process of a capture then belongs to the SSH user,
so a tcpdump argument (``-z``, ``-w FILE``) could at worst act with that user's own rights;
and the arguments are fixed anyway: a validated interface, the filter as the one operand
after ``--`` (never an option), ``-U -w -`` (the stream to us). The sandbox sets its lab user
up with the same command, so the integration tests exercise it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labrunner.capture.filters import check_filter, check_interface, session_clause
from labrunner.capture.pcapstream import PcapCounter

# the group and the one setup line live at the ground floor: the sandbox gives its lab user them too
from labrunner.capture_rights import CAPTURE_GROUP as CAPTURE_GROUP
from labrunner.capture_rights import setup_command as setup_command
from labrunner.errors import CaptureError, CommandError, LabError, ToolMissing
from labrunner.executor.base import Executor, Process
from labrunner.textsafe import safe

RAW_NAME = "capture.pcap"
PCAPNG_NAME = "capture.pcapng"

def setup_hint(user: str) -> str:
    if user == "root":
        return "root can always capture: check that tcpdump runs there (tcpdump -D)"
    return ("let the SSH user capture without root (tcpdump gets cap_net_raw,cap_net_admin for one group); "
            f"on the target run: sudo sh -c {shlex.quote(setup_command(user))}  then log in again")


Progress = Callable[[int, int], None]  # (packets, bytes) received so far

# Captures told to stop (drain()) whose tcpdump has not exited yet, per connection: a new
# capture's start() waits for them, so that no packet of what follows lands in one of them.
_DRAINING: weakref.WeakKeyDictionary[Any, set[Any]] = weakref.WeakKeyDictionary()
_DRAINING_LOCK = threading.Lock()


def _draining(executor: Executor, cap: Any, add: bool) -> list[Any]:
    """Add or remove ``cap``; the others still draining on this connection."""
    with _DRAINING_LOCK, contextlib.suppress(TypeError):
        caps = _DRAINING.setdefault(executor, set())
        if add:
            caps.add(cap)
        else:
            caps.discard(cap)
        return [c for c in caps if c is not cap]
    return []




# Held on the target for a whole run: a second run there (another student, another machine)
# would capture this one's sessions and passwords, and this one its. flock(1) on /etc/hosts:
# a file every user may read (no file to create in a sticky /tmp, where fs.protected_regular
# would refuse another user's), one per host, and one per sandbox target (`ip netns exec`
# mounts each namespace its own). The lock goes with the holder, which ends on EOF of its stdin:
# when we release it, and when the connection drops.
# (flock -n exits 1 when the lock is taken; not -E, which util-linux before 2.25 lacks.)
_HOLD = ('exec 9</etc/hosts && { flock -n 9; s=$?; case $s in 0) ;; 1) exit 75;; *) exit "$s";; esac; } && '
         "echo labrunner-holds-the-target && exec cat >/dev/null")
BUSY = 75


class TargetBusy(CaptureError):
    """hold_target: another labrunner run holds this host's capture lock now."""


def hold_target(executor: Executor, timeout: float = 15) -> Process | None:
    """Take this host's capture lock for as long as the returned process runs (kill() it, or
    close its stdin, to release); None when the host has no flock(1) (nothing to hold).
    TargetBusy (a CaptureError) when another labrunner run holds it."""
    proc = executor.start(_HOLD)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in got:
            chunk = proc.read_stdout(256, max(deadline - time.monotonic(), 0.01))
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    if got.startswith(b"labrunner-holds-the-target"):
        return proc
    code: int | None = None
    with contextlib.suppress(LabError):
        code = proc.wait(5)
    proc.kill()
    if code == BUSY:
        raise TargetBusy(
            f"{executor.host_label}: another labrunner run is capturing on this host now; two runs on one "
            "host would capture each other's sessions and passwords",
            hint="wait until it ends and run again, or give each student a host of their own",
        )
    return None  # no flock there (127), or no /etc/hosts: nothing can be held



def tcpdump_script(
    interface: str, bpf: str, snaplen: int = 0, tcpdump: str = "tcpdump", liveness: float = 60,
    *, wait_for_go: bool = False,
) -> str:
    """The sh wrapper run on the target (POSIX sh: dash has no `read -t`).

    stdin is the lifeline. A line "s" asks tcpdump for its counters (SIGUSR1); any line
    proves we are still there; EOF (we stop, or sshd saw the connection close) stops
    tcpdump with SIGTERM; and so does ``liveness`` seconds without any line, which covers a
    network that died silently, where sshd may not notice for hours. At the end the wrapper
    signals its whole process group (``kill 0``) so no watcher or timer outlives it.

    With ``wait_for_go`` tcpdump starts only at a line "go": the wrapper (sshd's session,
    sh) is set up ahead, while the previous scenario runs (see Capture.prepare). Until
    then the same lifeline holds: EOF or ``liveness`` seconds of silence end the wrapper
    without tcpdump ever starting.
    """
    # --immediate-mode: without it libpcap hands packets over in ~1 s blocks, and the ones
    # still in the ring buffer when SIGTERM arrives are counted but never written.
    # "--": the filter is tcpdump's operand, never an option, whatever it starts with.
    argv = [tcpdump, "-i", check_interface(interface), "-n", "-s", str(int(snaplen)), "--immediate-mode",
            "-U", "-w", "-"]
    if bpf.strip():
        argv += ["--", check_filter(bpf)]
    live = max(1, round(liveness))
    # A timer: TERM (from a fresh line) cancels it, the end of its sleep stops "$p".
    arm = (f'arm() {{ (trap \'kill "$z" 2>/dev/null; exit 0\' TERM; sleep {live} & z=$!; '
           'wait "$z" && kill -TERM "$p") & t=$!; }; ')
    go = ""
    if wait_for_go:
        # "$p" is the wrapper itself until tcpdump runs: silence ends the wait as well.
        # (Timers off the channel's stdout: the pcap stream, which only tcpdump may write.)
        go = ('p=$$; arm >/dev/null 2>&1; l=; while read l <&3; do kill "$t" 2>/dev/null; '
              '[ "$l" = go ] && break; arm >/dev/null 2>&1; done; '
              '[ "$l" = go ] || { kill "$t" 2>/dev/null; exit 0; }; ')
    return (
        "exec 3<&0; "
        + arm + go
        + f"{shlex.join(argv)} </dev/null 3<&- & p=$!; "
        # The watcher reads fd 3 explicitly: an async list's stdin is /dev/null by default.
        '(arm; while read l <&3; do kill "$t" 2>/dev/null; arm; '
        '[ "$l" = s ] && kill -USR1 "$p"; done; kill -TERM "$p") >/dev/null 2>&1 & '
        "exec 3<&-; "
        "wait \"$p\"; s=$?; trap '' TERM; kill -TERM 0 2>/dev/null; exit \"$s\""
    )



def _create_0600(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode goes through the umask; make it exact
    return fd


def finalize(pcap: Path, keylog: Path | None, out: Path) -> Path:
    """Convert the streamed pcap to pcapng (0600), embedding the TLS key log if there is one.

    With the key log inside (``editcap --inject-secrets tls,...``), Wireshark and tshark open
    the capture already decrypted, with no options.
    """
    editcap = shutil.which("editcap")
    if editcap is None:
        raise ToolMissing("editcap (from Wireshark) is not installed on this machine",
                          hint="apt-get install wireshark-common (or tshark)")
    tmp = out.with_name(f".{out.name}.tmp")
    argv = [editcap, "-F", "pcapng"]
    if keylog is not None and keylog.is_file() and keylog.stat().st_size > 0:
        argv += ["--inject-secrets", f"tls,{keylog}"]
    argv += [str(pcap), str(tmp)]
    os.close(_create_0600(tmp))
    try:
        # its own session: a Ctrl-C at the terminal must not kill it while a stopping run
        # finishes the captures it has (run/schedule.Pipeline settles them)
        proc = subprocess.run(argv, capture_output=True, timeout=300, check=False, umask=0o077,
                              start_new_session=True)
        if proc.returncode != 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CaptureError(
                f"editcap could not convert {pcap}: {msg[-1] if msg else 'exit code ' + str(proc.returncode)}",
                hint=f"the raw capture is kept in {pcap}",
            )
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return out


# --- the capture ------------------------------------------------------------------------


@dataclass
class CaptureResult:
    """What a capture produced; ``path`` is None when nothing usable was written."""

    path: Path | None
    packets: int  # complete packets in the file
    bytes: int  # pcap bytes received from the target
    interface: str
    filter: str
    partial: bool  # the stream ended early (connection lost, disk full, tcpdump killed)
    problem: str | None = None  # one line: why it is partial
    tcpdump_stats: dict[str, int] = field(default_factory=dict)  # captured/received/dropped
    raw_path: Path | None = None  # the raw pcap, kept only when conversion failed

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["raw_path"] = str(self.raw_path) if self.raw_path else None
        return d


_STAT = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)")
_INFO = re.compile(r"(\d+) packets? captured, (\d+) packets? received by filter")


# Why tcpdump stopped at once, from its error output (lower case): the first row whose pattern
# matches (across lines), or whose exit code it is, gives the error, its message (after "host: ") and its hint.
# Fields: last (tcpdump's last line), tcpdump, interface, names (the target's interfaces, asked
# only when shown), shown (the filter, cut at 300 characters), setup (how to let the SSH user
# capture: setup_hint).
_START_ERRORS: tuple[tuple[str, int | None, type[LabError], str, str], ...] = (
    # tcpdump is 0750 root:labrunner-cap and this user is not (yet) in the group (a capability
    # the process may not have, in a container, says "not permitted": below)
    (r"^(?!.*capture)(?=.*tcpdump).*permission denied", None, CaptureError,
     "the SSH user may not run tcpdump: {last}", "{setup}"),
    (r": not found|command not found", 127, ToolMissing,
     "{tcpdump} is not installed (command not found)",
     "install it there: apt-get install tcpdump  (or: yum install tcpdump)"),
    (r"no such device|doesn't exist|no such interface", None, CaptureError,
     "capture interface {interface!r} does not exist (there: {names})",
     "fix capture.interface in the scenario, or remove it to use the route to the first server"),
    (r"permission|not permitted", None, CaptureError,
     "tcpdump is not permitted to capture on {interface}: {last}",
     "{setup} (a container also needs CAP_NET_RAW)"),
    (r"syntax error|parse filter|filter expression", None, CaptureError,
     "the capture filter is not valid: {last} (filter: {shown})",
     "fix capture.filter in the scenario (tcpdump/BPF syntax)"),
)


class _StartFields(dict[str, str]):
    """The fields of _START_ERRORS for one capture; the target's interfaces asked only if shown."""

    def __init__(self, cap: Capture, last: str) -> None:
        shown = cap.filter if len(cap.filter) <= 300 else cap.filter[:299] + "…"
        super().__init__(last=last, tcpdump=cap.tcpdump, interface=cap.interface, shown=safe(shown),
                         setup=setup_hint(str(getattr(cap.executor, "user", "") or "USER")))
        self._cap = cap

    def __missing__(self, key: str) -> str:
        if key != "names":
            raise KeyError(key)
        return ", ".join(self._cap.executor.facts.interfaces()) or "none found"


class Capture:
    """tcpdump on the target for the duration of a ``with`` block (or start()/stop()).

    ``bpf`` is used as given, except that our own SSH connection is always excluded: a
    capture that includes the channel carrying it feeds on itself.
    """

    def __init__(
        self,
        executor: Executor,
        out_dir: Path,
        *,
        interface: str | None,
        bpf: str,
        snaplen: int = 0,
        keylog: Path | None = None,
        progress: Progress | None = None,
        tcpdump: str = "tcpdump",
        liveness: float = 60.0,
    ) -> None:
        self.executor = executor
        self.tcpdump = tcpdump  # the program on the target (a path if it is not on PATH)
        # Without a line from us for this long, the target stops tcpdump on its own.
        self.liveness = liveness
        self.out_dir = Path(out_dir)
        self.interface = check_interface(interface or "any")
        check_filter(bpf)
        own = _session_tuple(executor)
        clause = session_clause(own) if own else None
        if clause and clause not in bpf:
            bpf = f"({bpf}) and not {clause}" if bpf.strip() else f"not {clause}"
        self.filter = bpf
        self.snaplen = snaplen
        self.keylog = keylog
        self.progress = progress
        self.raw_path = self.out_dir / RAW_NAME
        self.out_path = self.out_dir / PCAPNG_NAME
        self.result: CaptureResult | None = None
        self._proc: Process | None = None
        self._fd: int | None = None
        self._counter = PcapCounter(track=True)
        self._written = 0
        # tcpdump's last lines (the error of a failed start, the closing counters); bounded, as
        # a target's shell may print without end
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._listening = threading.Event()
        self._stderr_done = threading.Event()
        self._pump_done = threading.Event()
        self._killed_at_stop = False
        self._drained = False  # stdin closed: tcpdump has been asked to stop
        self._prepared = False  # the wrapper waits for "go" (prepare())
        # How the stop knew it had every packet: "ends" (every connection of the sessions
        # ended in the capture), "counters" (tcpdump's stopped moving), "quiet" (no data for
        # a moment), "limit" (none of these in time), "gone" (tcpdump had already ended).
        self.settled: str | None = None
        self._stop_heartbeat = threading.Event()
        self._stdin_lock = threading.Lock()  # heartbeat lines and counter requests interleave
        self._write_error: OSError | None = None
        self._info: list[tuple[int, int]] = []  # (captured, received) answers to SIGUSR1
        self._info_cv = threading.Condition()
        self._last_data = time.monotonic()
        self._threads: list[threading.Thread] = []

    # -- starting --------------------------------------------------------------------

    def prepare(self) -> None:
        """Set up tcpdump's wrapper on the target now; start() will only have to say go.

        Starting a command over SSH costs a round trip (a channel, sshd's session):
        ~60 ms here, more over the Internet. The runner prepares the next scenario's capture
        while the current one's sessions run, so that cost leaves the run's critical path.
        A prepared capture that is not started must be given up with discard().
        """
        if self._proc is not None:
            return
        self._proc = self.executor.start(
            tcpdump_script(self.interface, self.filter, self.snaplen, self.tcpdump, self.liveness, wait_for_go=True))
        self._prepared = True
        self._threads = [
            threading.Thread(target=self._read_stderr, name="capture-stderr", daemon=True),
            threading.Thread(target=self._heartbeat, name="capture-heartbeat", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def discard(self) -> None:
        """Give up a prepared capture that was never started: its wrapper ends on EOF."""
        self._stop_heartbeat.set()
        proc = self._proc
        if proc is None or self._fd is not None:
            return
        with self._stdin_lock:
            proc.close_stdin()
        with contextlib.suppress(LabError):
            proc.wait(2)
        self._stderr_done.wait(2)
        with contextlib.suppress(Exception):
            proc.kill()  # only a round trip more when it did not end on its own

    def start(self, timeout: float = 10) -> None:
        """Start tcpdump; returns once it reports it is listening, so no packet is missed."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._fd = _create_0600(self.raw_path)
        threads = [threading.Thread(target=self._pump, name="capture-stdout", daemon=True)]
        try:
            if self._proc is None:
                self._proc = self.executor.start(
                    tcpdump_script(self.interface, self.filter, self.snaplen, self.tcpdump, self.liveness))
                threads += [
                    threading.Thread(target=self._read_stderr, name="capture-stderr", daemon=True),
                    threading.Thread(target=self._heartbeat, name="capture-heartbeat", daemon=True),
                ]
        except BaseException:
            self._close_fd()
            with contextlib.suppress(FileNotFoundError):
                self.raw_path.unlink()
            raise
        self._threads += threads
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        try:
            if self._prepared:
                with self._stdin_lock, contextlib.suppress(LabError):  # a dead wrapper: its stderr says why
                    self._proc.write_stdin(b"go\n")
            while not self._listening.is_set():
                if self._stderr_done.is_set() or self._pump_done.is_set():
                    self._stderr_done.wait(2)
                    raise self._start_error()
                if time.monotonic() >= deadline:
                    raise CaptureError(
                        f"{self.executor.host_label}: tcpdump did not start listening within {timeout:g} s"
                        + (f": {self._stderr[-1]}" if self._stderr else ""),
                        hint="the target may be overloaded; try again",
                    )
                self._listening.wait(0.05)
            # The previous capture may still be stopping (its tcpdump exits in a moment, in
            # the analysis worker): what follows must not reach it as well.
            for other in _draining(self.executor, self, add=False):
                other._pump_done.wait(max(deadline - time.monotonic(), 0))
        except BaseException:
            self._abort()
            raise

    @property
    def waiting(self) -> bool:
        """Prepared, and its wrapper is still there waiting for "go"."""
        return self._prepared and self._fd is None and not self._stderr_done.is_set()

    def _start_error(self) -> LabError:
        label = self.executor.host_label
        link_lost = getattr(self.executor, "link_lost", None)
        lost = link_lost() if link_lost is not None else None
        if isinstance(lost, LabError):
            return lost  # tcpdump did not fail: the connection to the target is gone
        low = "\n".join(self._stderr).lower()
        last = self._stderr[-1] if self._stderr else "no error output"
        code: int | None = None
        if self._proc is not None:
            with contextlib.suppress(LabError):
                code = self._proc.wait(2)
        fields = _StartFields(self, last)
        for pattern, exit_code, error, message, hint in _START_ERRORS:
            if (exit_code is not None and code == exit_code) or re.search(pattern, low, re.DOTALL):
                return error(f"{label}: " + message.format_map(fields), hint=hint.format_map(fields))
        return CaptureError(f"{label}: tcpdump stopped at once: {last}")

    # -- the two readers ------------------------------------------------------------------

    def _read_stderr(self) -> None:
        assert self._proc is not None
        try:
            while True:
                try:
                    line = self._proc.read_stderr_line(1.0)
                except TimeoutError:
                    continue
                except LabError:
                    break
                if line is None:
                    break
                m = _INFO.search(line)
                if m and not _STAT.match(line):
                    with self._info_cv:
                        self._info.append((int(m.group(1)), int(m.group(2))))
                        self._info_cv.notify_all()
                    continue
                self._stderr.append(line)
                if "listening on" in line:
                    self._listening.set()
        finally:
            self._stderr_done.set()

    def _pump(self) -> None:
        assert self._proc is not None and self._fd is not None
        try:
            while True:
                try:
                    data = self._proc.read_stdout(1 << 16, 1.0)
                except TimeoutError:
                    continue
                except (LabError, OSError):
                    break
                if not data:
                    break
                self._last_data = time.monotonic()
                if not self._write(data):
                    # Disk full (or a failing disk): stop tcpdump at once, not stream into nowhere.
                    with contextlib.suppress(Exception):
                        self._proc.kill()
                    break
                if self.progress is not None:
                    with contextlib.suppress(Exception):
                        self.progress(self._counter.packets, self._written)
        finally:
            self._pump_done.set()
            _draining(self.executor, self, add=False)
            with self._info_cv:
                self._info_cv.notify_all()  # drain() may wait for ends that will not come now

    def _heartbeat(self) -> None:
        """A line every third of the liveness period, so the target knows we are there."""
        assert self._proc is not None
        while not self._stop_heartbeat.wait(self.liveness / 3):
            try:
                with self._stdin_lock:
                    if self._stop_heartbeat.is_set():
                        return
                    self._proc.write_stdin(b"h\n")
            except LabError:
                return

    def _write(self, data: bytes) -> bool:
        assert self._fd is not None
        view = memoryview(data)
        while len(view):
            try:
                n = os.write(self._fd, view)
            except OSError as exc:
                self._write_error = exc
                return False
            with self._info_cv, contextlib.suppress(CaptureError):
                self._counter.feed(bytes(view[:n]))
                self._info_cv.notify_all()  # drain() waits for the ends of connections
            self._written += n
            view = view[n:]
        return True

    # -- stopping ---------------------------------------------------------------------

    def drain(self, connections: int = 0, limit: float = 2.0) -> None:
        """Wait until the capture holds every packet of the traffic so far, then ask tcpdump
        to stop; what is left for stop() (tcpdump's exit, the pcapng) may run in another
        thread, and the next capture may start at once.

        ``connections``: how many TCP connections the sessions made. Once the capture has
        seen that many and each of them has ended (FINs acknowledged, or a reset), it holds
        them whole and tcpdump is stopped at once; otherwise its counters are watched until
        they stop moving (see _settle), at most ``limit`` seconds.
        """
        proc = self._proc
        if proc is None or self._drained or self.result is not None:
            return
        self._stop_heartbeat.set()
        try:
            self._settle(proc, limit, connections)
        finally:
            if not self._pump_done.is_set():
                _draining(self.executor, self, add=True)
            with self._stdin_lock:
                proc.close_stdin()  # the wrapper's watcher sends tcpdump SIGTERM
            self._drained = True

    def stop(self, timeout: float = 10) -> CaptureResult:
        """Let tcpdump flush and exit, save every packet received, leave nothing running.

        Returns the result even when the stream ended early (``partial``); raises
        CaptureError only when the capture could not be saved (disk full, editcap failure).
        """
        if self.result is not None:
            return self.result
        proc = self._proc
        if proc is None:
            raise CaptureError("the capture was never started")
        deadline = time.monotonic() + timeout
        code: int | None = None
        self._killed_at_stop = False
        try:
            self.drain(limit=min(2.0, timeout / 2))
            self._pump_done.wait(max(deadline - time.monotonic(), 0))
            if self._pump_done.is_set():
                with contextlib.suppress(LabError):
                    code = proc.wait(max(deadline - time.monotonic(), 0.5))
                self._stderr_done.wait(max(deadline - time.monotonic(), 0.5))
        finally:
            # Whatever happened above, nothing of ours may stay on the target.
            self._killed_at_stop = not self._pump_done.is_set()
            with contextlib.suppress(Exception):
                proc.kill()
            self._pump_done.wait(5)
            self._close_fd()
        return self._save(code)

    def _ended(self, connections: int) -> bool:
        """Whether the capture holds ``connections`` (or more) TCP connections, all ended.

        Called with ``_info_cv`` held (the pump updates the tracker under it)."""
        ends = self._counter.ends
        return (connections > 0 and ends is not None and ends.usable
                and ends.seen >= connections and ends.open == 0)

    def _settle(self, proc: Process, limit: float, connections: int = 0) -> None:
        """Wait until tcpdump has taken every packet the kernel has for it.

        On SIGTERM tcpdump leaves at once, and packets still in its ring buffer are counted
        as received but never written. So before stopping we ask for its counters (SIGUSR1)
        until they stop moving; a tcpdump that does not answer gets a short quiet period.
        With the sessions' ``connections`` given, their ends are what counts: once every one
        has ended in the capture, nothing of them is left to take (see TcpEnds); the counters
        alone could settle between the last reply and the FINs, which sshd sends only once it
        has seen our channel close. Only when the ends do not come within ``limit`` (a server
        that keeps a connection open) are the counters asked, for a short while more.
        """
        self.settled = "limit"
        if connections > 0:
            with self._info_cv:
                if self._info_cv.wait_for(lambda: self._ended(connections) or self._pump_done.is_set(),
                                          timeout=limit) and self._ended(connections):
                    self.settled = "ends"
                    return
            limit = min(limit / 2, 1.0)
        deadline = time.monotonic() + limit
        previous: tuple[int, int] | None = None
        while time.monotonic() < deadline and not self._pump_done.is_set():
            with self._info_cv:
                if self._ended(connections):
                    self.settled = "ends"
                    return
                seen = len(self._info)
            try:
                with self._stdin_lock:
                    proc.write_stdin(b"s\n")
            except LabError:
                self.settled = "gone"
                return
            with self._info_cv:
                self._info_cv.wait_for(
                    lambda: len(self._info) > seen or self._ended(connections),  # noqa: B023
                    timeout=max(min(0.5, deadline - time.monotonic()), 0))
                if self._ended(connections):
                    self.settled = "ends"
                    return
                current = self._info[-1] if len(self._info) > seen else None
            if current is None:
                break  # no answer to SIGUSR1: fall back to waiting for a quiet moment
            if current == previous:
                self.settled = "counters"
                return
            previous = current
            time.sleep(0.05)
        if self._pump_done.is_set():
            self.settled = "gone"
            return
        while time.monotonic() < deadline and time.monotonic() - self._last_data < 0.3:
            time.sleep(0.05)
        self.settled = "quiet" if time.monotonic() - self._last_data >= 0.3 else "limit"

    def _save(self, code: int | None) -> CaptureResult:
        stats = self._stats()
        counter = self._counter
        problem: str | None = None
        err = self._write_error
        full = err is not None and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        if err is not None:
            problem = "disk full" if full else f"cannot write the capture: {err.strerror}"
        elif self._killed_at_stop:
            problem = "tcpdump did not finish in time and was killed; packets in flight may be missing"
        elif code is None or code < 0:
            problem = "the connection to the target was lost during the capture"
        elif code != 0 or "captured" not in stats:
            last = self._stderr[-1] if self._stderr else f"exit code {code}"
            problem = f"tcpdump ended abnormally: {last}"
        if counter.trailing:
            # A packet cut in the middle would make the whole file unreadable to some tools.
            with contextlib.suppress(OSError):
                os.truncate(self.raw_path, counter.complete)
        base = dict(packets=counter.packets, bytes=self._written, interface=self.interface,
                    filter=self.filter, partial=problem is not None, problem=problem,
                    tcpdump_stats=stats)
        if err is not None:
            self.result = CaptureResult(path=None, raw_path=self.raw_path, **base)  # type: ignore[arg-type]
            what = "disk full" if full else f"{err.strerror} (errno {err.errno})"
            raise CaptureError(
                f"{what} while writing the capture: kept {counter.packets} packets "
                f"({counter.complete} bytes) in {self.raw_path}",
                hint=(f"free space on this machine (df -h {self.out_dir}) and run the scenario again" if full
                      else f"check the disk holding {self.out_dir} and run the scenario again"),
            )
        if counter.complete < PcapCounter.HEADER:
            self.result = CaptureResult(path=None, **base)  # type: ignore[arg-type]
            with contextlib.suppress(FileNotFoundError):
                self.raw_path.unlink()
            return self.result
        try:
            finalize(self.raw_path, self.keylog, self.out_path)
        except LabError:
            self.result = CaptureResult(path=None, raw_path=self.raw_path, **base)  # type: ignore[arg-type]
            raise
        self.raw_path.unlink()
        self.result = CaptureResult(path=self.out_path, **base)  # type: ignore[arg-type]
        return self.result

    def _stats(self) -> dict[str, int]:
        stats: dict[str, int] = {}
        for line in self._stderr:
            m = _STAT.match(line.strip())
            if m:
                stats[m.group(2).split()[0]] = int(m.group(1))
        return stats

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _abort(self) -> None:
        self._stop_heartbeat.set()
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.kill()
        self._pump_done.wait(5)
        self._close_fd()
        with contextlib.suppress(FileNotFoundError):
            self.raw_path.unlink()

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.result is not None or self._proc is None:
            return
        if exc_type is None:
            self.stop()
            return
        # Already failing: save what we have but let the original error through.
        with contextlib.suppress(LabError, OSError):
            self.stop()


def _session_tuple(executor: Executor) -> tuple[str, int, str, int] | None:
    get = getattr(executor, "session_tuple", None)
    if get is None:
        return None
    try:
        value = get()
    except (LabError, CommandError):
        return None
    return value if isinstance(value, tuple) else None
