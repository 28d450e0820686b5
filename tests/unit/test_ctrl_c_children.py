"""A Ctrl-C at the terminal (SIGINT to labrunner's whole process group) never kills a tool
labrunner has just started in a session of its own (tshark, editcap): cli.fork_children_plainly.

The start of a child is the window: a scenario already captured failed with "editcap could not
convert ...: exit code -2" when the Ctrl-C came while its editcap was being started."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, signal, subprocess, threading, time
from labrunner.cli import fork_children_plainly
fork_children_plainly()
signal.signal(signal.SIGINT, lambda *a: None)   # labrunner's own handler deals with its Ctrl-C
done = threading.Event()
def ctrl_c():
    while not done.is_set():
        os.killpg(os.getpgrp(), signal.SIGINT)
        time.sleep(0.0005)
thread = threading.Thread(target=ctrl_c)
thread.start()
killed = sum(subprocess.run(["true"], start_new_session=True).returncode == -signal.SIGINT for _ in range(300))
done.set()
thread.join()
print(killed)
"""


def test_no_child_started_in_its_own_session_dies_of_our_ctrl_c() -> None:
    # its own process group, as the terminal gives labrunner
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True,
                         start_new_session=True)
    assert out.stdout.strip() == "0", out.stderr
