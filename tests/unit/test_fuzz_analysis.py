"""Fuzzing the analysis: mutated captures end in a result or one AnalysisError, never a traceback
or a hang; and a property: splitting and reordering a stream's segments keeps its dialogue.

The mutations start from the real sandbox captures in tests/fixtures/captures: bit flips,
truncations, wrong link types, and streams of random TCP payloads on the mail ports. Every
case is reproducible from its seed (``LABRUNNER_FUZZ_SEED`` + case number) and the failing
case's file is kept for a rerun. ``make test`` runs ``LABRUNNER_FUZZ_COUNT`` cases (200 by
default; marked slow, so ``make test-quick`` leaves them out); ``make fuzz`` runs 5,000. The
cases run on every core, one tshark each.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, TimeoutError
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labrunner.analysis import analyze
from labrunner.errors import AnalysisError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
SOURCES = ["smtp-plain", "smtps-tls12", "imaps-tls13", "pop3-stls"]
MAIL_PORTS = [25, 465, 587, 110, 995, 143, 993, 443]
# Link types that exist but do not carry the fixtures' Ethernet frames, and a few that do not exist.
LINKTYPES = [0, 101, 105, 113, 127, 147, 195, 228, 229, 276, 65000, 0xFFFF, 0x7FFFFFFF]
CASE_TIMEOUT = 120  # far above tshark's own limits: reaching it means a hang

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


def fuzz_count() -> int:
    return int(os.environ.get("LABRUNNER_FUZZ_COUNT", "200"))


def fuzz_seed() -> int:
    return int(os.environ.get("LABRUNNER_FUZZ_SEED", "20261126"))


def _bases(folder: Path) -> dict[str, bytes]:
    """Each fixture as pcapng (as captured) and as classic pcap (whose header has the link type)."""
    from scapy.utils import wrpcap

    bases = {}
    for name in SOURCES:
        src = FIX / f"{name}.pcapng"
        bases[f"{name}.pcapng"] = src.read_bytes()
        pcap = folder / f"{name}.pcap"
        wrpcap(str(pcap), _packets(name))
        bases[f"{name}.pcap"] = pcap.read_bytes()
    return bases


def _bitflip(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 16, 64])):
        i = rng.randrange(len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[:rng.randrange(len(data))]


def _linktype(rng: random.Random, data: bytes) -> bytes:
    """A classic pcap's link type replaced (offset 20 of the global header, little-endian here)."""
    return data[:20] + struct.pack("<I", rng.choice(LINKTYPES)) + data[24:]


def _random_payload(rng: random.Random, size: int) -> bytes:
    shape = rng.randrange(3)
    if shape == 0:
        return rng.randbytes(size)
    if shape == 1:  # the start of a reply or command, so the protocol is recognised, then noise
        start = rng.choice([b"220 ", b"+OK ", b"* OK ", b"250-", b"334 ", b"a1 ", b"EHLO ", b"\xff\xfe"])
        return start + rng.randbytes(size) + b"\r\n"
    return b"\x16\x03\x01" + struct.pack(">H", size) + rng.randbytes(size)  # a TLS record header


def _random_tcp(rng: random.Random) -> bytes:
    """A capture of TCP segments with random payloads, flags and sequence numbers on a mail port."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapWriter

    port = rng.choice(MAIL_PORTS)
    client, cport = "10.77.0.2", rng.randrange(1024, 65535)
    seq = {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}
    pkts = []
    for n in range(rng.randrange(1, 40)):
        to_server = rng.random() < 0.5
        size = rng.choice([0, 1, 2, 10, 100, 1448, rng.randrange(0, 1460)])
        payload = _random_payload(rng, size)
        src, dst, sport, dport = (client, "10.77.0.3", cport, port) if to_server else ("10.77.0.3", client, port, cport)
        flags = rng.choice(["PA", "A", "S", "SA", "F", "FA", "R", "PAU", "", "FSRPAUEC"])
        if rng.random() < 0.2:
            seq[to_server] = rng.randrange(1 << 32)  # a jump: gaps and overlaps
        pkts.append(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                         seq=seq[to_server], ack=seq[not to_server]) / payload)
        pkts[-1].time = 1_700_000_000 + n * 0.01
        seq[to_server] = (seq[to_server] + len(payload)) % (1 << 32)
    import io

    out = io.BytesIO()
    writer = PcapWriter(out, linktype=1, sync=True)
    writer.write(pkts)
    data = out.getvalue()
    writer.close()
    return data


MUTATIONS = ["bitflip", "truncate", "linktype", "random-tcp", "bitflip+truncate"]


def make_case(seed: int, bases: dict[str, bytes]) -> tuple[str, bytes]:
    rng = random.Random(seed)
    kind = MUTATIONS[seed % len(MUTATIONS)]
    if kind == "random-tcp":
        return kind, _random_tcp(rng)
    if kind == "linktype":
        name = rng.choice([n for n in bases if n.endswith(".pcap")])
        return f"{kind} {name}", _linktype(rng, bases[name])
    name = rng.choice(sorted(bases))
    data = bases[name]
    if "bitflip" in kind:
        data = _bitflip(rng, data)
    if "truncate" in kind:
        data = _truncate(rng, data)
    return f"{kind} {name}", data


def run_case(seed: int, bases: dict[str, bytes], folder: str) -> tuple[int, str, str, str]:
    """(seed, what, outcome, detail): outcome is ok, error (one AnalysisError line) or bug."""
    what, data = make_case(seed, bases)
    path = Path(folder) / f"case-{seed}.pcap"
    path.write_bytes(data)
    try:
        doc = analyze(path, lang="en")
        assert isinstance(doc["streams"], list) and doc["capture"]["frames"] >= 0
        outcome, detail = "ok", ""
    except AnalysisError as err:
        text = str(err)
        outcome, detail = ("error", text) if text and "\n" not in text else ("bug", f"not one line: {text!r}")
    except Exception:  # the point of fuzzing: anything else is a bug, reported with its traceback
        outcome, detail = "bug", traceback.format_exc()
    if outcome != "bug":
        path.unlink()
    return seed, what, outcome, detail


@pytest.mark.slow  # 200 tshark runs (half a minute on 2 cores): in `make test`, not in `make test-quick`
@pytest.mark.timeout(300 + 2 * fuzz_count())  # the suite's 300 s would stop `make fuzz` half-way
def test_mutated_captures_end_in_a_result_or_one_clear_error(tmp_path: Path) -> None:
    bases = _bases(tmp_path)
    count, seed0 = fuzz_count(), fuzz_seed()
    results: list[tuple[int, str, str, str]] = []
    hung: list[int] = []
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {seed0 + i: pool.submit(run_case, seed0 + i, bases, str(tmp_path)) for i in range(count)}
        for seed, fut in futures.items():
            try:
                results.append(fut.result(timeout=CASE_TIMEOUT))
            except TimeoutError:
                hung.append(seed)
    assert not hung, f"analysis hung on cases {hung} (LABRUNNER_FUZZ_SEED, make_case)"
    bugs = [r for r in results if r[2] == "bug"]
    assert not bugs, "\n\n".join(f"case {s} ({w}), file {tmp_path}/case-{s}.pcap:\n{d}" for s, w, _, d in bugs[:5])
    assert len(results) == count
    # The fuzzing reaches both ends: captures that still analyse and ones that are refused.
    outcomes = {r[2] for r in results}
    if count >= 50:
        assert outcomes == {"ok", "error"}, outcomes
    print(f"{count} cases: " + ", ".join(f"{o} {sum(r[2] == o for r in results)}" for o in sorted(outcomes)),
          file=sys.stderr)


# Cases the full run (make fuzz) found, kept as regressions: a bit flip in the certificate's
# key algorithm OID made cryptography raise UnsupportedAlgorithm out of the analysis.
FOUND = [20264119]


@pytest.mark.parametrize("seed", FOUND)
def test_cases_found_by_fuzzing_stay_fixed(seed: int, tmp_path: Path) -> None:
    _, what, outcome, detail = run_case(seed, _bases(tmp_path), str(tmp_path))
    assert outcome != "bug", f"{what}: {detail}"


# --- property: segmentation does not change the dialogue -------------------------------------------


def _packets(name: str) -> list:
    import scapy.layers.inet
    import scapy.layers.l2  # noqa: F401  (registers the layers before reading)
    from scapy.utils import rdpcap

    return list(rdpcap(str(FIX / f"{name}.pcapng")))


def _payload(p: object) -> bytes:
    from scapy.layers.inet import TCP

    return bytes(p[TCP].payload)  # type: ignore[index]


def _texts(doc: dict) -> list[tuple[str, str]]:
    (stream,) = doc["streams"]
    return [(e["dir"], e["text"]) for e in stream["dialogue"]]


@pytest.fixture(scope="module")
def plain_smtp() -> tuple[list, list[tuple[str, str]]]:
    pkts = _packets("smtp-plain")
    return pkts, _texts(analyze(FIX / "smtp-plain.pcapng", lang="en", show_credentials=True))


@settings(max_examples=int(os.environ.get("LABRUNNER_FUZZ_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_splitting_and_reordering_segments_keeps_the_dialogue(data: st.DataObject, plain_smtp, tmp_path: Path) -> None:
    """Each chosen data segment is cut into pieces at drawn offsets and its pieces are sent in a
    drawn order (TCP allows both; Wireshark reassembles them), so the byte streams are the same
    and the dialogue must be too."""
    from scapy.layers.inet import IP, TCP
    from scapy.packet import Raw
    from scapy.utils import wrpcap

    pkts, want = plain_smtp
    with_data = [i for i, p in enumerate(pkts) if len(_payload(p)) > 1]
    chosen = data.draw(st.sets(st.sampled_from(with_data), min_size=1, max_size=6), label="segments")
    out = []
    for i, p in enumerate(pkts):
        if i not in chosen:
            out.append(p)
            continue
        payload = _payload(p)
        cuts = sorted(data.draw(st.sets(st.integers(1, len(payload) - 1), min_size=1, max_size=4), label=f"cuts {i}"))
        bounds = list(zip([0, *cuts], [*cuts, len(payload)], strict=True))
        order = data.draw(st.permutations(range(len(bounds))), label=f"order {i}")
        for k in order:
            start, end = bounds[k]
            q = p.copy()
            q[TCP].remove_payload()
            q[TCP].seq = (p[TCP].seq + start) % (1 << 32)
            del q[IP].len, q[IP].chksum, q[TCP].chksum
            out.append(q / Raw(payload[start:end]))
    path = tmp_path / "resegmented.pcap"
    wrpcap(str(path), out)
    assert _texts(analyze(path, lang="en", show_credentials=True)) == want
