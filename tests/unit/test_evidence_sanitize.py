"""The sanitized copy of a capture (labrunner/evidence/sanitize.py), on the recorded sandbox
captures of tests/fixtures/captures (made with a made-up password, FAKE below): no form of the
password anywhere in the file, not even after decryption with the keys it keeps; the same
frames, lengths and timings; the same dialogue, ours and tshark's, apart from the hidden bytes."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from labrunner import pcap
from labrunner.analysis import analyze
from labrunner.evidence import sanitize, secret_byte_forms

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
FAKE = "fixture-not-a-secret-7"
USER = "student@lab.test"

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def _follow(path: Path, mode: str, index: int) -> list[tuple[str, bytes]]:
    """tshark's own "Follow stream" of one stream: (side, bytes) per turn."""
    out = subprocess.run(["tshark", "-r", str(path), "-n", "-q", "-z", f"follow,{mode},raw,{index}"],
                         capture_output=True, text=True, check=True).stdout
    turns = []
    for line in out.splitlines():
        text = line.strip()
        if not text or line.startswith(("=", "Follow:", "Filter:", "Node ")):
            continue
        turns.append(("S" if line.startswith("\t") else "C", bytes.fromhex(text)))
    return turns


def _everything_decrypted(path: Path) -> bytes:
    """Every byte tshark can decrypt in the file (with only the keys it carries)."""
    out = subprocess.run(["tshark", "-r", str(path), "-n", "-T", "fields", "-e", "tls.segment.data",
                          "-e", "data.data", "--disable-protocol", "smtp", "--disable-protocol", "pop",
                          "--disable-protocol", "imap", "--disable-protocol", "http"],
                         capture_output=True, text=True, check=True).stdout
    return b"".join(bytes.fromhex(x) for x in out.replace("\t", ",").replace("\n", ",").split(",") if x)


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, object]]:
    root = tmp_path_factory.mktemp("sanitized")
    out = {}
    for name in ("smtp-plain", "pop3-stls", "smtps-tls12", "imaps-tls13"):
        src = CAPTURES / f"{name}.pcapng"
        dst = root / f"{name}.pcapng"
        out[name] = (src, dst, sanitize(src, dst, secret=FAKE, users=[USER]))
    return out


def test_the_analysis_says_where_the_password_bytes_are() -> None:
    doc = analyze(CAPTURES / "smtp-plain.pcapng", lang="en")
    (stream,) = doc["streams"]
    assert stream["carries_credentials"] is True
    (lo, hi), = stream["secret_bytes"]["C"]
    sent = b"".join(data for side, data in _follow(CAPTURES / "smtp-plain.pcapng", "tcp", 0) if side == "C")
    # relative sequence numbers start at 1 after the SYN
    assert sent[lo - 1:hi - 1] == __import__("base64").b64encode(FAKE.encode())
    assert stream["secret_bytes"]["S"] == []


@pytest.mark.parametrize("name", ["smtp-plain", "pop3-stls", "smtps-tls12", "imaps-tls13"])
def test_no_form_of_the_password_anywhere(sanitized: dict, name: str) -> None:
    src, dst, _ = sanitized[name]
    forms = secret_byte_forms(FAKE, [USER])
    assert len(forms) >= 8  # plain, base64 (+ 3 offset cores), PLAIN, Basic, URL-encoded, hex
    original = src.read_bytes() + _everything_decrypted(src)
    assert any(f in original for f in forms)  # the test can fail: the original holds it
    data = dst.read_bytes()
    assert not [f for f in forms if f in data]
    assert not [f for f in forms if f in _everything_decrypted(dst)]


@pytest.mark.parametrize("name", ["smtp-plain", "pop3-stls", "smtps-tls12", "imaps-tls13"])
def test_same_frames_lengths_and_times(sanitized: dict, name: str) -> None:
    src, dst, _ = sanitized[name]
    a, b = list(pcap.frames(src)), list(pcap.frames(dst))
    assert [(len(x), w) for x, w in a] == [(len(x), w) for x, w in b]
    fields = ["-T", "fields", "-e", "frame.number", "-e", "frame.time_epoch", "-e", "frame.len",
              "-e", "tcp.stream", "-e", "tcp.seq", "-e", "tcp.len"]
    run = [subprocess.run(["tshark", "-r", str(p), "-n", *fields], capture_output=True, text=True,
                          check=True).stdout for p in (src, dst)]
    assert run[0] == run[1]
    mode = dst.stat().st_mode & 0o777
    assert mode == 0o644


def test_plain_smtp_dialogue_equal_apart_from_the_hidden_bytes(sanitized: dict) -> None:
    src, dst, result = sanitized["smtp-plain"]
    hidden = __import__("base64").b64encode(FAKE.encode())
    assert result.overwritten == len(hidden) - hidden.count(b"X")  # bytes that changed
    ours = [analyze(p, lang="en") for p in (src, dst)]
    assert ours[0]["streams"] == ours[1]["streams"]
    before, after = _follow(src, "tcp", 0), _follow(dst, "tcp", 0)
    assert [(s, len(d)) for s, d in before] == [(s, len(d)) for s, d in after]
    differ = [(x, y) for (_, x), (_, y) in zip(before, after, strict=True) if x != y]
    assert len(differ) == 1
    x, y = differ[0]
    assert y.strip(b"X\r\n") == b"" and x.rstrip(b"\r\n") != y.rstrip(b"\r\n")
    # the changed segment carries a correct TCP checksum and says it was changed
    check = subprocess.run(["tshark", "-r", str(dst), "-n", "-o", "tcp.check_checksum:TRUE", "-Y",
                            "tcp.checksum.status == 0 || frame.comment", "-T", "fields", "-e", "frame.number",
                            "-e", "frame.comment"], capture_output=True, text=True, check=True).stdout
    assert str(result.frames[0]) in check and "credential bytes overwritten" in check


@pytest.mark.parametrize("name", ["pop3-stls", "smtps-tls12", "imaps-tls13"])
def test_a_tls_session_with_a_password_keeps_its_ciphertext_but_not_its_keys(sanitized: dict, name: str) -> None:
    src, dst, result = sanitized[name]
    assert result.tls_withheld == [0] and result.tls_kept == []
    a, b = analyze(src, lang="en"), analyze(dst, lang="en")
    assert a["streams"][0]["tls"]["decrypted"] and not b["streams"][0]["tls"]["decrypted"]
    # the handshake is what it was; the plain part before STARTTLS too
    for key in ("version", "cipher_suite", "sni", "client_hello", "server_hello"):
        assert a["streams"][0]["tls"][key] == b["streams"][0]["tls"][key]
    plain = [e for e in a["streams"][0]["dialogue"] if not e["decrypted"]]
    upto = next(i for i, e in enumerate(plain) if e["kind"] == "tls") + 1
    assert b["streams"][0]["dialogue"][:upto] == plain[:upto]
    assert _follow(dst, "tls", 0) == []  # nothing decrypts it


def test_keys_of_a_session_without_credentials_are_kept(tmp_path: Path) -> None:
    # smtps-tls12 sanitized without the analysis' marks (a doc saying "no credentials"): the keys
    # stay, and the second line of defence (the secret's forms in the decrypted bytes) takes them
    src = CAPTURES / "smtps-tls12.pcapng"
    doc = analyze(src, lang="en")
    doc["streams"][0]["carries_credentials"] = False
    kept = sanitize(src, tmp_path / "kept.pcapng", json.loads(json.dumps(doc)))
    assert kept.tls_kept == [0] and _follow(tmp_path / "kept.pcapng", "tls", 0)
    caught = sanitize(src, tmp_path / "caught.pcapng", doc, secret=FAKE, users=[USER])
    assert caught.tls_withheld == [0] and _follow(tmp_path / "caught.pcapng", "tls", 0) == []


FOREIGN = Path(__file__).resolve().parents[1] / "fixtures" / "evidence"
FOREIGN_PASSWORD = "_lszuMy8m2rFBwvNBrWJ"  # of a sandbox that no longer exists (fixtures/evidence/README.md)


@pytest.mark.parametrize(("name", "withheld", "plain"), [
    ("https_post", [0, 1, 2], False),  # curl: a form POST, a JSON login body, GET ?password=, all in TLS
    ("oddports_tls", [0, 1, 2, 3], False),  # mail over TLS on ports the analysis does not read as mail
    ("host_any_dup", [1], True),  # tcpdump -i any: Linux cooked v2, every packet twice; POP3S beside
    ("nc_imap_literals", [], True),  # IMAP LOGIN with its arguments as literals
    ("curl_pop3", [], True),  # POP3 AUTH PLAIN
])
def test_third_party_captures_without_the_secret(tmp_path: Path, name: str, withheld: list[int],
                                                 plain: bool) -> None:
    # no secret given: the analysis' positions and the withheld keys alone must hide it
    src, dst = FOREIGN / f"{name}.pcapng", tmp_path / f"{name}.pcapng"
    result = sanitize(src, dst)
    assert result.tls_withheld == withheld and result.tls_kept == []
    assert (result.overwritten > 0) == plain
    forms = secret_byte_forms(FOREIGN_PASSWORD, [USER])
    assert any(f in src.read_bytes() + _everything_decrypted(src) for f in forms)
    assert not [f for f in forms if f in dst.read_bytes() + _everything_decrypted(dst)]
    before, after = analyze(src, lang="en"), analyze(dst, lang="en")
    from labrunner.evidence.verify import compare_analyses

    assert compare_analyses(before, after)[0] == []


def test_a_symlink_planted_where_the_copy_goes_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    dst = tmp_path / "sanitized.pcapng"
    dst.symlink_to(victim)
    (tmp_path / ".sanitized.pcapng.tmp").symlink_to(victim)  # and at a name a writer might pick
    sanitize(CAPTURES / "smtp-plain.pcapng", dst, secret=FAKE, users=[USER])
    assert victim.read_text() == "keep me"
    assert not dst.is_symlink() and dst.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sanitized.pcapng.tmp", "sanitized.pcapng", "victim.txt"]


def test_plain_http_credentials_are_overwritten_by_position(tmp_path: Path) -> None:
    # a plain-HTTP login (the sandbox serves HTTPS only, so the packets are built here): the
    # Authorization and Cookie values, a ?password= query, a form's password split over two
    # segments, and the server's Set-Cookie
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    body = b"user=student&password=hunter2secret&remember=1"
    request = (b"POST /login?next=/inbox&password=qpass123 HTTP/1.1\r\nHost: mail.lab.test\r\n"
               b"Authorization: Basic c3R1ZGVudDpodW50ZXIy\r\nCookie: sid=abc123token\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    response = b"HTTP/1.1 302 Found\r\nSet-Cookie: sess=srvsecret9; HttpOnly\r\nContent-Length: 0\r\n\r\n"
    c, s = IP(src="10.0.0.2", dst="10.0.0.3"), IP(src="10.0.0.3", dst="10.0.0.2")
    cut = len(request) - 20  # the password's value spans both segments

    def seg(ip: IP, sport: int, dport: int, flags: str, seq: int, ack: int, data: bytes = b"") -> Ether:
        return Ether() / ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / data

    packets = [seg(c, 40000, 80, "S", 100, 0), seg(s, 80, 40000, "SA", 500, 101), seg(c, 40000, 80, "A", 101, 501),
               seg(c, 40000, 80, "PA", 101, 501, request[:cut]), seg(c, 40000, 80, "PA", 101 + cut, 501, request[cut:]),
               seg(s, 80, 40000, "PA", 501, 101 + len(request), response),
               seg(c, 40000, 80, "FA", 101 + len(request), 501 + len(response)),
               seg(s, 80, 40000, "FA", 501 + len(response), 102 + len(request))]
    wrpcap(str(tmp_path / "http.pcap"), packets)
    src = tmp_path / "http.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(tmp_path / "http.pcap"), str(src)], check=True)
    dst = tmp_path / "sanitized.pcapng"
    result = sanitize(src, dst)
    secrets = [b"qpass123", b"c3R1ZGVudDpodW50ZXIy", b"abc123token", b"hunter2secret", b"srvsecret9"]
    sent = [b"".join(d for _, d in _follow(p, "tcp", 0)) for p in (src, dst)]  # the streams, reassembled
    assert all(x in sent[0] for x in secrets)
    assert [x for x in secrets if x in sent[1] or x in dst.read_bytes()] == []
    # the whole value of a credential header, the value of a secret field: nothing else
    hidden = [b"Basic c3R1ZGVudDpodW50ZXIy", b"sid=abc123token", b"sess=srvsecret9; HttpOnly", b"qpass123",
              b"hunter2secret"]
    assert len(sent[0]) == len(sent[1]) and sent[1].count(b"X") == sum(len(x) for x in hidden)
    assert result.overwritten >= sum(len(x) for x in secrets)
    before, after = analyze(src, lang="en"), analyze(dst, lang="en")
    from labrunner.evidence.verify import compare_analyses

    assert compare_analyses(before, after)[0] == []
    assert before["streams"][0]["secret_bytes"]["S"]  # Set-Cookie: the server's side
