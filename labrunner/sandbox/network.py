"""The sandbox network: two namespaces on a bridge in the root namespace.

    root ns:  lr-NAME-br (10.77.n.1) ── lr-NAME-e ══ eth0 (10.77.n.2)  in lr-NAME-ecs
                                    └── lr-NAME-m ══ eth0 (10.77.n.3)  in lr-NAME-mail

The bridge has an address so labrunner on this machine reaches ecs's sshd directly. Offloads are
off on every device so captures show real segments of at most one MTU, and IPv6 is off so
captures hold no router solicitations or multicast listener reports the lab does not ask for.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
from pathlib import Path

from labrunner.errors import SandboxError
from labrunner.sandbox.layout import Layout, Subnet, host_name
from labrunner.sandbox.system import run

MTU = 1500
OFFLOADS = ("tso", "gso", "gro", "tx", "rx")
_BRNF = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")


def netns_exists(ns: str) -> bool:
    return Path("/run/netns", ns).exists()


def link_exists(dev: str) -> bool:
    return Path("/sys/class/net", dev).exists()


def _ip_batch(commands: list[str], netns: str | None = None) -> None:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, input_text="\n".join(commands) + "\n")


def _sysctl(netns: str | None, settings: dict[str, str]) -> None:
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["sysctl", "-q", "-w"]
    run(argv + [f"{k}={v}" for k, v in settings.items()])


def _offloads_off(dev: str, netns: str | None) -> None:
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["ethtool", "-K", dev]
    for feature in OFFLOADS:
        argv += [feature, "off"]
    # ethtool exits non-zero when a feature is fixed on this driver; veth and bridges accept
    # all of these, so check the result instead of trusting the exit status.
    run(argv, check=False)


def hosts_file(subnet: Subnet, targets: int = 1) -> str:
    # The machine's own host name is here too: servers look it up at start, and without an
    # answer in this file they would wait for DNS timeouts (there is no DNS in the namespaces).
    me = socket.gethostname()
    lines = "".join(f"{subnet.target(k)}\t{host_name(k)}.lab.test {host_name(k)}\n"
                    for k in range(1, targets + 1))
    return (
        "# written by `labrunner sandbox up`: the names of the sandbox lab\n"
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{me}\n"
        f"{lines}"
        f"{subnet.mail}\tmail.lab.test smtp.lab.test pop.lab.test imap.lab.test lab.test\n"
    )


def namespaces(layout: Layout, targets: int) -> list[str]:
    return [layout.target_ns(k) for k in range(1, targets + 1)] + [layout.mail_ns]


def veths(layout: Layout, targets: int) -> list[str]:
    return [layout.veth_target(k) for k in range(1, targets + 1)] + [layout.veth_mail]


def existing_targets(layout: Layout) -> list[int]:
    """Numbers of the targets whose namespace or link exists (for `down` without a state file)."""
    ns_re = re.compile(re.escape(layout.ecs_ns) + r"(\d*)\Z")
    dev_re = re.compile(re.escape(layout.veth_ecs) + r"(\d*)\Z")
    found: set[int] = set()
    for folder, pattern in ((Path("/run/netns"), ns_re), (Path("/sys/class/net"), dev_re)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for n in names:
            m = pattern.match(n)
            if m:
                found.add(int(m.group(1) or 1))
    return sorted(found)


def create(layout: Layout, subnet: Subnet, targets: int = 1) -> None:
    """Make the namespaces, the bridge and the veth links; raises SandboxError on failure."""
    all_ns = namespaces(layout, targets)
    for ns in all_ns:
        # ip netns exec bind-mounts /etc/netns/<ns>/hosts over /etc/hosts for what it starts
        # (sshd and every session under it), so the lab names resolve inside ecs and mail.
        d = layout.netns_hosts_dir(ns)
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text(hosts_file(subnet, targets))
        # A resolver that fails at once (nothing listens on 127.0.0.1:53 in the namespace)
        # instead of waiting seconds for the machine's nameserver, which is unreachable here.
        (d / "resolv.conf").write_text(
            "# written by `labrunner sandbox up`: no DNS in the sandbox; names are in hosts\n"
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        for f in ("hosts", "resolv.conf"):
            os.chmod(d / f, 0o644)
    for ns in all_ns:
        run(["ip", "netns", "add", ns])
    br = layout.bridge
    pairs = list(zip(veths(layout, targets), all_ns, strict=True))
    # IPv6 off before the links come up, so not even one router solicitation is sent.
    for ns in all_ns:
        _sysctl(ns, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
    _ip_batch([
        f"link add {br} type bridge stp_state 0 forward_delay 0",
        f"link set {br} mtu {MTU}",
        *(f"link add {dev} mtu {MTU} type veth peer name eth0 mtu {MTU} netns {ns}" for dev, ns in pairs),
    ])
    _sysctl(None, {f"net.ipv6.conf.{dev}.disable_ipv6": "1" for dev in (br, *veths(layout, targets))})
    _ip_batch([
        *(f"link set {dev} master {br}" for dev, _ in pairs),
        f"addr add {subnet.gateway}/24 dev {br}",
        f"link set {br} up",
        *(f"link set {dev} up" for dev, _ in pairs),
    ])
    # No default route: the sandbox has no Internet, and a connection to anything outside the
    # lab's /24 should fail at once ("Network is unreachable") instead of timing out.
    addrs = [subnet.target(k) for k in range(1, targets + 1)] + [subnet.mail]
    for ns, addr in zip(all_ns, addrs, strict=True):
        _ip_batch([
            "link set lo up",
            f"addr add {addr}/24 dev eth0",
            "link set eth0 up",
        ], netns=ns)
    _pin_macs(layout, pairs)
    all_offloads_off(layout, targets)
    _allow_bridged(layout)


def _pin_macs(layout: Layout, pairs: list[tuple[str, str]]) -> None:
    """Static bridge entries for every lab host, so the bridge never floods a unicast frame.

    A bridge sends a frame for a MAC address it has not learned (yet, or again after ageing)
    to every port; with several targets, ecs3's capture would then hold ecs2's mail traffic.
    """
    cmds = []
    for dev, ns in pairs:
        out = run(["ip", "-n", ns, "-o", "link", "show", "eth0"]).stdout
        if "link/ether" in out:
            cmds.append(f"fdb replace {out.split('link/ether', 1)[1].split()[0]} dev {dev} master static")
    if cmds:
        run(["bridge", "-batch", "-"], input_text="\n".join(cmds) + "\n")


def _devices(layout: Layout, targets: int = 1) -> list[tuple[str, str | None]]:
    return ([(layout.bridge, None)] + [(dev, None) for dev in veths(layout, targets)]
            + [("eth0", ns) for ns in namespaces(layout, targets)])


def all_offloads_off(layout: Layout, targets: int = 1) -> None:
    for dev, ns in _devices(layout, targets):
        _offloads_off(dev, ns)


def offload_problems(layout: Layout, targets: int = 1) -> list[str]:
    """Devices whose offloads are on again (captures would show 64 KB super-packets)."""
    found = []
    for dev, ns in _devices(layout, targets):
        on = sorted(k for k, v in offloads(dev, ns).items() if v)
        if on:
            found.append(f"offloads {', '.join(on)} are on for {dev}" + (f" in {ns}" if ns else ""))
    return found


def offloads(dev: str, netns: str | None = None) -> dict[str, bool]:
    """The offload features as ethtool reports them (True = on), for status and tests."""
    argv = (["ip", "netns", "exec", netns] if netns else []) + ["ethtool", "-k", dev]
    out = run(argv).stdout
    names = {
        "tcp-segmentation-offload": "tso", "generic-segmentation-offload": "gso",
        "generic-receive-offload": "gro", "tx-checksumming": "tx", "rx-checksumming": "rx",
    }
    result: dict[str, bool] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key in names:
            result[names[key]] = value.strip().startswith("on")
    return result


def _comment(layout: Layout) -> str:
    return f"labrunner-sandbox-{layout.name}"


def _allow_bridged(layout: Layout) -> None:
    """Let the sandbox's own traffic through the root namespace's firewall.

    With br_netfilter loaded (bridge-nf-call-iptables = 1), frames between ecs and mail cross
    the root namespace's FORWARD chain, so a host firewall with a DROP policy (Docker sets one)
    would cut the lab in two. Only then do we add tagged ACCEPT rules, which `down` removes.
    """
    try:
        brnf = _BRNF.read_text().strip() == "1"
    except OSError:
        brnf = False
    rules = run(["iptables", "-S"], check=False).stdout
    permissive = all(
        line.startswith("-P ") and line.endswith(" ACCEPT") for line in rules.splitlines() if line
    )
    if permissive or not shutil.which("iptables"):
        return
    c = _comment(layout)
    if brnf:
        run(["iptables", "-I", "FORWARD", "-i", layout.bridge, "-o", layout.bridge,
             "-m", "comment", "--comment", c, "-j", "ACCEPT"])
    run(["iptables", "-I", "INPUT", "-i", layout.bridge, "-m", "comment", "--comment", c, "-j", "ACCEPT"])


def remove_firewall_rules(layout: Layout) -> None:
    c = _comment(layout)
    out = run(["iptables", "-S"], check=False).stdout
    for line in out.splitlines():
        if f'--comment {c} ' in line + " " or f'--comment "{c}"' in line:
            parts = line.split()
            if parts and parts[0] == "-A":
                run(["iptables", "-D", *[p.strip('"') for p in parts[1:]]], check=False)


def destroy(layout: Layout) -> list[str]:
    """Remove links, namespaces and /etc/netns entries; returns what was removed. Never raises
    for something already gone, so `down` also cleans up a half-made instance."""
    removed: list[str] = []
    # Every target that exists, not only those a state file lists: `down` cleans half-made ones.
    numbers = sorted({1, *existing_targets(layout)})
    all_devs = [layout.veth_target(k) for k in numbers] + [layout.veth_mail, layout.bridge]
    all_ns = [layout.target_ns(k) for k in numbers] + [layout.mail_ns]
    for dev in all_devs:
        if link_exists(dev):
            run(["ip", "link", "del", dev], check=False)
            removed.append(f"link {dev}")
    for ns in all_ns:
        if netns_exists(ns):
            run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        d = layout.netns_hosts_dir(ns)
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    remove_firewall_rules(layout)
    leftovers = [dev for dev in all_devs if link_exists(dev)]
    leftovers += [ns for ns in all_ns if netns_exists(ns)]
    if leftovers:
        raise SandboxError(
            f"could not remove {', '.join(leftovers)}",
            hint="see `ip link` and `ip netns list`; remove them with `ip link del` / `ip netns del`",
        )
    return removed


def busy_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks on this machine's interfaces (to keep sandbox subnets clear of them)."""
    out = run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            cidr = parts[parts.index("inet") + 1]
            nets.append(ipaddress.IPv4Interface(cidr).network)
    return nets
