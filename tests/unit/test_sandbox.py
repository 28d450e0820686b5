"""Fast tests of the sandbox's pure parts: names, subnets, templates, keys, state, CLI errors.

The servers themselves are tested for real in tests/integration/test_sandbox_*.py.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import subprocess
from pathlib import Path

import pytest

from labrunner import cli
from labrunner.errors import ExitStatus, SandboxError, ToolMissing, UsageError
from labrunner.sandbox import keys, layout, lifecycle, network, services
from labrunner.sandbox.layout import Layout, Subnet, pick_index, preferred_index, validate_name
from labrunner.sandbox.system import run


@pytest.mark.parametrize("name", ["a", "lab", "test", "abcdefgh", "x9", "00000000"])
def test_good_instance_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Lab", "abcdefghi", "a-b", "a b", "lab\n", "é", "../x"])
def test_bad_instance_names_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="use 1-8 characters a-z and 0-9") as info:
        validate_name(name)
    assert isinstance(info.value, SandboxError)
    assert info.value.exit_status == ExitStatus.USAGE


def test_default_instance_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(layout.ENV_INSTANCE, raising=False)
    assert layout.default_instance() == "lab"
    monkeypatch.setenv(layout.ENV_INSTANCE, "mine")
    assert layout.default_instance() == "mine"
    assert lifecycle.state_path() == layout.RUN_ROOT / "sandbox-mine" / "state.json"
    monkeypatch.setenv(layout.ENV_INSTANCE, "Bad Name")
    with pytest.raises(UsageError, match=r"\$LABRUNNER_SANDBOX_INSTANCE"):
        layout.default_instance()


def test_interface_names_fit_the_kernel_limit() -> None:
    lay = Layout("abcdefgh")
    for dev in (lay.bridge, lay.veth_ecs, lay.veth_mail):
        assert len(dev) <= 15, dev
    assert len({lay.bridge, lay.veth_ecs, lay.veth_mail}) == 3
    assert (lay.ecs_ns, lay.mail_ns) == ("lr-abcdefgh-ecs", "lr-abcdefgh-mail")
    assert lay.state_dir != lay.srv_dir


def test_subnet_addresses() -> None:
    s = Subnet(42)
    assert (s.network, s.gateway, s.ecs, s.mail) == ("10.77.42.0/24", "10.77.42.1", "10.77.42.2", "10.77.42.3")


def test_preferred_subnet_is_stable_and_in_range() -> None:
    assert preferred_index("lab") == preferred_index("lab")
    indexes = {preferred_index(f"n{i}") for i in range(300)}
    assert min(indexes) >= 1 and max(indexes) <= 254
    assert len(indexes) > 100  # spread, not a constant


def test_pick_index_avoids_taken_slots_and_busy_networks() -> None:
    first = preferred_index("lab")
    assert pick_index("lab", set(), []) == first
    nxt = first % 254 + 1
    assert pick_index("lab", {first}, []) == nxt
    busy = [ipaddress.IPv4Network(f"10.77.{nxt}.0/24")]
    assert pick_index("lab", {first}, busy) == nxt % 254 + 1
    # A host route covering the whole /16 leaves nothing.
    with pytest.raises(SandboxError, match="no free subnet"):
        pick_index("lab", set(), [ipaddress.IPv4Network("10.77.0.0/16")])


def test_allocations_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path)
    assert layout.read_allocations() == {}
    layout.write_allocations({"a": 3, "b": 200})
    assert layout.read_allocations() == {"a": 3, "b": 200}
    (tmp_path / "subnets.json").write_text("{not json")
    assert layout.read_allocations() == {}


def test_hosts_file_names_every_server() -> None:
    text = network.hosts_file(Subnet(7))
    mail_line = next(line for line in text.splitlines() if line.startswith("10.77.7.3\t"))
    assert set(mail_line.split()[1:]) >= {"smtp.lab.test", "pop.lab.test", "imap.lab.test", "mail.lab.test"}
    assert "10.77.7.2\tecs.lab.test" in text


VALUES = {"instance": "t", "srv": "/run/labrunner/srv-t", "user": "labrunner-lab", "mail_uid": "8", "mail_gid": "8",
          "sshd": "/run/labrunner/srv-t/sshd", "host": "ecs"}


@pytest.mark.parametrize("name", ["postfix-main.cf", "postfix-master.cf", "dovecot.conf", "nginx.conf",
                                  "sshd_config", "php-fpm.conf", "roundcube.inc.php"])
def test_templates_fill_completely(name: str) -> None:
    text = services.template(name, {**VALUES, "des_key": "k" * 24})
    assert "{{" not in text and "}}" not in text


def test_template_with_a_missing_value_is_an_error() -> None:
    with pytest.raises(SandboxError, match=r"no value for \{\{srv\}\}"):
        services.template("nginx.conf", {"instance": "t"})


def test_configs_keep_to_their_own_directories() -> None:
    # Only read-only files of the Debian packages may come from the system: Postfix's meta
    # files, nginx's MIME and FastCGI tables, Roundcube's document root (its static files).
    system = {"/etc/postfix", "/etc/nginx/mime.types", "/etc/nginx/fastcgi_params", "/var/lib/roundcube/public_html"}
    for name in ("postfix-main.cf", "dovecot.conf", "nginx.conf", "sshd_config", "php-fpm.conf",
                 "roundcube.inc.php"):
        text = services.template(name, {**VALUES, "des_key": "k" * 24})
        for line in text.splitlines():
            if line.lstrip().startswith(("#", ";", "//")):
                continue
            for path in re.findall(r"(?<![\w/.-])(/(?:etc|var)/[^\s;']+)", line):
                assert path in system, f"{name} points at {path}"
    main_cf = services.template("postfix-main.cf", VALUES)
    assert "smtpd_peername_lookup = no" in main_cf
    assert "maillog_file = /run/labrunner/srv-t/logs/postfix.log" in main_cf
    nginx = services.template("nginx.conf", VALUES)
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in nginx and "ECDHE-RSA-AES128-GCM-SHA256" in nginx
    # the server's preference decides the suite, ECDHE-RSA-AES128-GCM-SHA256 first (the seed's)
    assert "ssl_prefer_server_ciphers on;" in nginx
    assert "ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:" in nginx


def test_ssh_key_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = keys.new_ssh_key("comment here")
    pub = tmp_path / "k.pub"
    pub.write_text(key.public_line + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
    assert out.split()[1] == key.fingerprint
    assert key.public_line.startswith("ssh-ed25519 ") and key.public_line.endswith(" comment here")
    import paramiko

    priv = tmp_path / "k"
    keys.write_private(priv, key.private_openssh)
    assert priv.stat().st_mode & 0o777 == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(priv))
    assert loaded.get_base64() == key.public_line.split()[1]


def test_ssha256_is_what_dovecot_expects() -> None:
    hashed = keys.ssha256("s3cret")
    assert hashed.startswith("{SSHA256}")
    raw = base64.b64decode(hashed.removeprefix("{SSHA256}"))
    digest, salt = raw[:32], raw[32:]
    assert hashlib.sha256(b"s3cret" + salt).digest() == digest
    assert hashlib.sha256(b"s3creT" + salt).digest() != digest
    assert keys.ssha256("s3cret") != hashed  # salted


def test_passwords_are_long_and_typable() -> None:
    pws = {keys.new_password() for _ in range(20)}
    assert len(pws) == 20
    assert all(len(p) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in pws)


def test_server_certificate_verifies_for_every_mail_name() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509 import DNSName, IPAddress
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    tls = keys.new_tls("t", "10.77.9.3")
    ca = x509.load_pem_x509_certificate(tls.ca_cert)
    certs = x509.load_pem_x509_certificates(tls.server_cert)
    assert len(certs) == 1  # the leaf only, like a server under a public root
    leaf = certs[0]
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)  # ECDHE-RSA suites need an RSA key
    store = Store([ca])
    for name in keys.MAIL_NAMES:
        PolicyBuilder().store(store).build_server_verifier(DNSName(name)).verify(leaf, [])
    PolicyBuilder().store(store).build_server_verifier(IPAddress(ipaddress.ip_address("10.77.9.3"))).verify(leaf, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("qq.com")).verify(leaf, [])
    other_ca = x509.load_pem_x509_certificate(keys.new_tls("u", "10.77.9.3").ca_cert)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other_ca])).build_server_verifier(DNSName("smtp.lab.test")).verify(leaf, [])


def test_load_state_when_not_running_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "RUN_ROOT", tmp_path)
    with pytest.raises(SandboxError) as info:
        lifecycle.load_state("lab")
    assert str(info.value) == "the sandbox `lab` is not running: start it with `labrunner sandbox up`"
    with pytest.raises(SandboxError, match=r"start it with `labrunner sandbox up --instance x2`"):
        lifecycle.load_state("x2")
    d = tmp_path / "sandbox-x2"
    d.mkdir()
    (d / "state.json").write_text("{broken")
    with pytest.raises(SandboxError, match="is damaged"):
        lifecycle.load_state("x2")
    (d / "state.json").write_text(json.dumps({"instance": "x2"}))
    assert lifecycle.read_state("x2") == {"instance": "x2"}  # the document, as the sandbox's own code reads it
    with pytest.raises(SandboxError, match=r"no usable ecs\.host") as info:
        lifecycle.load_state("x2")  # typed: a state without its target is said when it is read
    assert "sandbox up" in (info.value.hint or "")
    assert lifecycle.instances() == ["x2"]


def test_public_state_hides_the_password() -> None:
    state = {"instance": "t", "account": {"address": "student@lab.test", "password": "hunter2hunter2"}}
    shown = json.dumps(lifecycle.public_state(state))
    assert "hunter2hunter2" not in shown and "state.json" in shown
    assert state["account"]["password"] == "hunter2hunter2"  # the original is untouched


def test_format_status_not_running() -> None:
    assert lifecycle.format_status({"instance": "t", "running": False, "leftovers": False}) == \
        "sandbox t: not running"
    assert "labrunner sandbox down --instance t" in lifecycle.format_status(
        {"instance": "t", "running": False, "leftovers": True})


def test_run_reports_the_command_and_its_last_line() -> None:
    with pytest.raises(SandboxError, match=r"`sh -c 'echo one; echo two >&2; exit 3'` failed \(exit 3\): two"):
        run(["sh", "-c", "echo one; echo two >&2; exit 3"])
    with pytest.raises(ToolMissing, match="`no-such-tool-xyz` is not installed"):
        run(["no-such-tool-xyz"])
    with pytest.raises(SandboxError, match=r"did not finish within 0\.2 s"):
        run(["sleep", "5"], timeout=0.2)


def test_netns_exec_prefixes_the_namespace() -> None:
    from labrunner.sandbox import netns_exec

    assert netns_exec("t", "ecs", ["python3", "-V"]) == ["ip", "netns", "exec", "lr-t-ecs", "python3", "-V"]
    assert netns_exec("t", "mail", ["ss"])[:4] == ["ip", "netns", "exec", "lr-t-mail"]
    with pytest.raises(SandboxError, match=r"use `ecs`, `ecs2` \.\.\. or `mail`"):
        netns_exec("t", "web", ["true"])


@pytest.mark.parametrize("action", ["up", "down", "status"])
def test_cli_without_root_says_what_to_do(action: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert cli.main(["sandbox", action, "--instance", "t"]) == ExitStatus.ENVIRONMENT
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        f"labrunner: error: the sandbox needs root for network namespaces: run `sudo labrunner sandbox {action}`")
    assert "Traceback" not in err


def test_cli_bad_instance_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sandbox", "up", "--instance", "Way-Too-Long"]) == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "bad sandbox instance name 'Way-Too-Long'" in err and "Traceback" not in err


def test_cli_unknown_action_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["sandbox", "restart"])
    assert info.value.code == 2
    assert "invalid choice: 'restart'" in capsys.readouterr().err


def test_an_instance_from_older_code_is_not_healthy() -> None:
    old = {"instance": "t", "ecs": {"host": "10.77.1.2"}, "mail": {"host": "10.77.1.3"}}
    assert lifecycle.problems(old) == [
        f"made by an older labrunner (state version 1, now {lifecycle.STATE_VERSION})"]


def test_class_targets_have_their_own_names_and_addresses() -> None:
    from labrunner.sandbox import netns_exec
    from labrunner.sandbox.layout import Layout, Subnet, host_name
    from labrunner.sandbox.network import hosts_file

    lay, net = Layout("abcdefgh"), Subnet(7)
    assert [lay.target_ns(k) for k in (1, 2, 3)] == ["lr-abcdefgh-ecs", "lr-abcdefgh-ecs2", "lr-abcdefgh-ecs3"]
    # interface names are at most 15 characters, also for the longest instance name
    assert max(len(lay.veth_target(k)) for k in range(1, 41)) <= 15
    assert len({net.target(k) for k in range(1, 41)} | {net.gateway, net.mail}) == 42
    assert netns_exec("t", "ecs3", ["true"])[:4] == ["ip", "netns", "exec", "lr-t-ecs3"]
    text = hosts_file(net, 3)
    assert "10.77.7.12\tecs2.lab.test ecs2" in text and "10.77.7.13\tecs3.lab.test" in text
    assert host_name(1) == "ecs"


def test_numbered_sshd_is_a_service_and_a_bad_one_is_not() -> None:
    assert services.service("sshd3").host == "ecs3"
    assert list(services.all_services(3)) == ["sshd", "sshd2", "sshd3", "postfix", "dovecot", "php-fpm",
                                                  "nginx"]
    for bad in ("sshd1", "sshd0", "sshd99", "ssh"):
        with pytest.raises(SandboxError, match="unknown sandbox service"):
            services.service(bad)


@pytest.mark.parametrize("bad", [0, -1, 41, True])
def test_bad_number_of_targets_is_a_usage_error(bad: int) -> None:
    from labrunner.errors import UsageError
    from labrunner.sandbox.lifecycle import check_targets

    with pytest.raises(UsageError, match="bad number of sandbox targets"):
        check_targets(bad)
