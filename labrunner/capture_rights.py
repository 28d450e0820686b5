"""Who may capture without root: the group and the one line, run as root on the target, that set
it up (tcpdump with file capabilities, mode 0750, for the group's members).

README, ``labrunner doctor`` and capture's own hint give this line for a real target; the sandbox
runs it for its lab user. It lives on the ground floor so that the sandbox (which config/ reads)
does not stand on capture/.
"""

from __future__ import annotations

import shlex

# The group whose members may capture (tcpdump with file capabilities, mode 0750).
CAPTURE_GROUP = "labrunner-cap"


def setup_command(user: str) -> str:
    """The one line, run as root on the target, that lets ``user`` capture without root.

    tcpdump (resolved through a symlink: setcap needs the file) becomes root:labrunner-cap
    0750 with ``cap_net_raw,cap_net_admin=eip``; ``user`` joins the group (a new SSH login
    picks it up). A tcpdump package upgrade replaces the file and drops the capabilities:
    run the line again (``labrunner doctor`` says so).
    """
    return (f"groupadd -f {CAPTURE_GROUP} && usermod -aG {CAPTURE_GROUP} {shlex.quote(user)} && "
            't=$(readlink -f "$(command -v tcpdump)") && '
            f'chgrp {CAPTURE_GROUP} "$t" && chmod 0750 "$t" && setcap cap_net_raw,cap_net_admin=eip "$t"')
