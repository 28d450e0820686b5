"""The corpus of third-party captures (issue 14) and what the analysis must make of each.

Every capture in tests/fixtures/captures/foreign/ was made by a client labrunner did not write
(curl, swaks, openssl s_client, msmtp, mutt, s-nail, fetchmail, Python's smtplib/poplib/imaplib,
nc) against the sandbox's real Postfix/Dovecot/nginx, or is an edited copy of one (editcap,
scapy: a packet dropped, the capture started late, ...). ``CORPUS`` lists them; for each,
``NAME.dialogue`` next to the capture holds the expected dialogue in outline (stream, frame,
who, kind, first word), checked by hand against Wireshark. test_analysis_foreign_corpus.py
checks, for every case:

* our dialogue is exactly the outline;
* every command and reply tshark's own SMTP/POP/IMAP dissectors find is in our dialogue at the
  same frame (or inside an entry spanning several frames), in the same direction, except the
  cases listed in ``Case.tshark_wrong``, each with the reason tshark is the one that is wrong;
* no credential tshark finds anywhere in the corpus (SMTP AUTH, IMAP LOGIN, POP3 PASS, HTTP
  Basic, cookies, password-like query/form parameters), in any form (as sent, decoded, base64),
  is in our text or JSON output.

To add a case: copy the capture (and its key log) into the folder, add a ``Case`` to ``CORPUS``,
run ``python tests/unit/foreign_corpus.py NAME`` to write ``NAME.dialogue`` from the current
analysis, and check that file line by line against Wireshark before committing it.
"""

from __future__ import annotations

import base64
import binascii
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parents[1] / "fixtures" / "captures" / "foreign"


@dataclass(frozen=True)
class Case:
    source: str  # who made it, how, and what it shows
    keys: bool = False  # NAME.keys is its TLS key log
    # (frame, tshark's item) -> why tshark is wrong there and we are right; item "*": every item
    # tshark shows at that frame (e.g. each line of a message it reads as requests)
    tshark_wrong: dict[tuple[int, str], str] = field(default_factory=dict)
    # extra tshark options for the comparison (e.g. -d to decode a non-standard port)
    tshark_args: tuple[str, ...] = ()
    # frames carrying an IMAP literal (a message) that tshark reads line by line as requests or
    # responses; each must lie inside one of our "data" entries in the same direction
    literal_frames: tuple[int, ...] = ()


# tshark 4.0's SMTP dissector takes a verb as its first 4 characters: STARTTLS is "STAR" + "TLS"
ALIASES = {"STAR": "STARTTLS"}
_LITERAL = "tshark reads the content of an IMAP literal (RFC 3501 4.3) as a request of its own"
_AUTH_CONT = "tshark reads an IMAP AUTHENTICATE continuation (client's SASL line) as a request"

CORPUS: dict[str, Case] = {
    "curl_pop3.pcap": Case("curl → Dovecot :110, AUTH PLAIN, RETR"),
    "curl_imaps.pcap": Case("curl → Dovecot :993, AUTHENTICATE PLAIN (initial response), UID FETCH", keys=True),
    "fetchmail_imap.pcap": Case("fetchmail → Dovecot :143, LOGIN, RFC822.HEADER and BODY.PEEK[TEXT] x13"),
    "mutt_send.pcap": Case("mutt (GnuTLS) → Postfix :587 STARTTLS, AUTH PLAIN, 2 text attachments", keys=True),
    "nc_imap_literals.pcap": Case(
        "nc → Dovecot :143: LOGIN with synchronizing and LITERAL+ literals, AUTHENTICATE LOGIN, quoted LOGIN",
        tshark_wrong={
            (10, "student@lab.test {20}"): _LITERAL, (14, "_lszuMy8m2rFBwvNBrWJ"): _LITERAL,
            (33, "student@lab.test {20+}"): _LITERAL, (35, "_lszuMy8m2rFBwvNBrWJ"): _LITERAL,
            (56, "c3R1ZGVudEBsYWIudGVzdA=="): _AUTH_CONT, (59, "X2xzenVNeThtMnJGQnd2TkJyV0o="): _AUTH_CONT,
        }),
    "oddports_tls.pcap": Case(
        "curl and Python through socat relays: IMAPS :9993, SMTPS :4650 (AUTH LOGIN), POP3S :9995, HTTPS :8443 "
        "with Basic auth and a cookie (D1: mail over TLS on any port is mail)", keys=True,
        tshark_args=("-d", "tcp.port==9993,tls", "-d", "tls.port==9993,imap", "-d", "tcp.port==4650,tls",
                     "-d", "tls.port==4650,smtp", "-d", "tcp.port==9995,tls", "-d", "tls.port==9995,pop")),
    "multi_if.pcapng": Case(
        "dumpcap -i eth0 -i lo (two interfaces): SMTP :25 and :2525, IMAPS :993 and :9993 (D1)", keys=True,
        tshark_args=("-d", "tcp.port==2525,smtp", "-d", "tcp.port==9993,tls", "-d", "tls.port==9993,imap")),
    "https_post.pcap": Case("curl → nginx :443: POST form and JSON logins, GET /login?password=… (D18)", keys=True),
    "mid_smtp_authpw.pcap": Case("editcap -r swaks_login.pcap 12-27: starts at the 334 Password: prompt (D2)"),
    "mid_smtp_plainblob.pcap": Case("editcap -r curl_smtp_plain.pcap 10-31: starts at AUTH PLAIN's 334 (D2)"),
    "mid_imap_authlogin.pcap": Case(
        "editcap -r nc_imap_literals.pcap 54-82: starts at AUTHENTICATE LOGIN's first + prompt (D2)",
        tshark_wrong={(6, "X2xzenVNeThtMnJGQnd2TkJyV0o="): _AUTH_CONT, (3, "c3R1ZGVudEBsYWIudGVzdA=="): _AUTH_CONT}),
    "mid_pop3_authplain.pcap": Case("editcap -r curl_pop3.pcap 11-26: starts at AUTH PLAIN's + prompt (D2)"),
    "lost_srv_hs.pcap": Case(
        "editcap curl_pop3s.pcap 8: one 91-byte segment of the server's TLS 1.3 handshake removed (D4)", keys=True),
    "host_any_dup.pcap": Case(
        "tcpdump -i any in the root namespace: every packet twice, and the kernel dropped 8 (D4): "
        "SMTP with AUTH PLAIN, then POP3S whose server handshake lost a segment", keys=True),
    "ossl_https_rsa.pcap": Case("openssl s_client -tls1_2 -cipher AES128-GCM-SHA256 → nginx :443, which refuses: "
                                "alert handshake_failure, no Server Hello (D13)"),
    "smtps.pcapng": Case("nDPI's smtps.pcapng (public, Exim on :465): the server answers the Client Hello with a "
                         "plain-text 220 greeting (D13)"),
    "ossl_smtp_starttls12.pcap": Case("openssl s_client -starttls smtp -tls1_2 (ECDHE-RSA-AES128-GCM-SHA256) → "
                                      "Postfix :587, AUTH LOGIN, GB2312 subject (D17)", keys=True),
    # the "STARTTLS missing under TLS 1.3", sought with three real clients against the
    # sandbox's Postfix :587 over TLS 1.3 (a made-up password, refused with 535): STARTTLS is there
    "ossl_smtp_starttls13.pcap": Case("openssl s_client -starttls smtp -tls1_3 -crlf, AUTH LOGIN (refused)",
                                      keys=True),
    "py_smtp_starttls13.pcap": Case("Python smtplib starttls() + login() (AUTH PLAIN, then LOGIN; refused); "
                                    "the capture ends before QUIT", keys=True),
    "curl_smtp_starttls13.pcap": Case("curl --ssl-reqd smtp://…:587, one mail", keys=True),
    "py_smtp_login_ir.pcap": Case("Python smtplib → Postfix :25, AUTH LOGIN with an initial response"),
    "snail_send.pcap": Case("s-nail → Postfix :25, AUTH LOGIN, 3 attachments, RFC 2231 file name"),
    "swaks_plain_attach.pcap": Case("swaks → Postfix :25, AUTH PLAIN with initial response, raw UTF-8 headers"),
    "mid_pop3.pcap": Case("editcap -r curl_pop3.pcap 15-26: starts at RETR (D8: no greeting, the message summarised)"),
    "py_append.pcap": Case(
        "imaplib APPEND + FETCH BODY[1], BODY[2]<0.100>, BINARY[2]; smtplib AUTH PLAIN; \"Doe, John\" (D11, D15, D16)",
        literal_frames=(15, 16, 30)),
    "bdat_chunks.pcap": Case(
        "raw client → Postfix :25 (make_foreign_captures.py): BDAT in 3 chunks, the first ending inside a line, "
        "a body line starting 'AUTH ' (D6)"),
    "bdat_pipelined.pcap": Case(
        "raw client → Postfix :25: MAIL, RCPT, BDAT 100, BDAT n LAST and QUIT in one write, the last chunk "
        "without CRLF (D6)"),
    "smtp_auth_login.pcap": Case("raw client → Postfix :25: AUTH LOGIN on the 334 prompts, a made-up password: 535"),
}


def outline(doc: dict[str, Any]) -> list[str]:
    """One line per dialogue entry: stream, frame, direction, kind, first word of its text."""
    out = []
    for s in doc["streams"]:
        for e in s["dialogue"]:
            words = e["text"].split(None, 1)
            out.append(f"{s['index']} {e['frame']} {e['dir']} {e['kind']} {words[0] if words else ''}")
    return out


def expected(name: str) -> list[str]:
    path = DIR / (name.rsplit(".", 1)[0] + ".dialogue")
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]


def analyze_case(name: str, lang: str = "en") -> dict[str, Any]:
    # the golden test (test_analysis_golden.py) checks the same documents: one analysis for both
    if str(DIR.parents[1]) not in sys.path:
        sys.path.insert(0, str(DIR.parents[1]))
    import make_golden

    assert (DIR / (name.rsplit(".", 1)[0] + ".keys")).is_file() == CORPUS[name].keys, name
    return make_golden.document(DIR / name, lang)


# --- tshark's own reading ------------------------------------------------------------------------

ITEM_FIELDS = ("smtp.req.command", "smtp.response.code", "pop.request.command", "pop.response.indicator",
               "imap.request", "imap.response")
CRED_FIELDS = ("smtp.auth.password", "smtp.auth.username_password", "imap.request.password",
               "pop.request.command", "pop.request.parameter", "http.authbasic", "http.cookie", "http.set_cookie",
               "http.request.uri.query.parameter", "urlencoded-form.key", "urlencoded-form.value")
SEP = "\x1f"


def tshark_rows(name: str) -> list[dict[str, Any]]:
    """tshark's SMTP/POP/IMAP/HTTP fields per frame, its dissectors all on."""
    case = CORPUS[name]
    argv = ["tshark", "-r", str(DIR / name), "-n", "-Y", "smtp || pop || imap || http || urlencoded-form",
            "-T", "fields", "-E", "occurrence=a", "-E", f"aggregator={SEP}", "-E", "separator=\t", "-E", "quote=n",
            *case.tshark_args]
    if case.keys:
        argv += ["-o", f"tls.keylog_file:{DIR / (name.rsplit('.', 1)[0] + '.keys')}"]
    names = ("frame.number", "tcp.stream", "tcp.srcport", *ITEM_FIELDS, *CRED_FIELDS)
    for f in names:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, errors="replace", check=True).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) != len(names):
            continue
        rows.append({n: [v for v in c.split(SEP) if v] for n, c in zip(names, cols, strict=True)})
    return rows


def items(rows: list[dict[str, Any]]) -> list[tuple[int, int, int, str]]:
    """(frame, tcp.stream, source port, item) of every command and reply tshark shows."""
    out = []
    for r in rows:
        for f in ITEM_FIELDS:
            for v in r[f]:
                out.append((int(r["frame.number"][0]), int(r["tcp.stream"][0].split(SEP)[0]),
                            int(r["tcp.srcport"][0]), v))
    return out


def _key(text: str) -> list[str]:
    return text.upper().split()[:2]


def disagreements(name: str, doc: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """tshark's commands/replies missing from our dialogue (frame, direction, first words)."""
    case = CORPUS[name]
    streams = {s["index"]: s for s in doc["streams"]}
    out = []
    for frame, index, sport, item in items(rows):
        if (frame, item) in case.tshark_wrong or (frame, "*") in case.tshark_wrong:
            continue
        s = streams.get(index)
        if s is None:
            out.append(f"{name}: frame {frame}: tshark's {item!r} is in stream {index}, which we do not list")
            continue
        d = "S" if sport == s["server"]["port"] else "C"
        if frame in case.literal_frames and any(
                e["dir"] == d and e["kind"] == "data" and e["first_frame"] <= frame <= e["frame"]
                for e in s["dialogue"]):
            continue  # a line of a literal message: ours is one data entry
        want = _key(item)
        want[0] = ALIASES.get(want[0], want[0])
        # the lines of an IMAP response are all in one entry; an SMTP reply code repeats on each line
        want = want[:1] if want[0].isdigit() or want[0] in ("+OK", "-ERR", "+") else want
        found = False
        for e in s["dialogue"]:
            if e["dir"] != d or not e["first_frame"] <= frame <= e["frame"]:
                continue
            if e["kind"] == "auth":
                found = True  # a credential line: tshark reads it as a command, we mark it as SASL data
                break
            if any(_key(ln)[:len(want)] == want for ln in e["text"].split("\n")):
                found = True
                break
        if not found:
            out.append(f"{name}: frame {frame} {d}: tshark shows {item[:60]!r}, our dialogue does not")
    return out


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def credentials(rows: list[dict[str, Any]]) -> set[str]:
    """Every credential tshark finds, in each form it could be printed in."""
    found: set[str] = set()
    for r in rows:
        values = list(r["smtp.auth.password"]) + list(r["smtp.auth.username_password"]) + \
            list(r["imap.request.password"]) + list(r["http.authbasic"]) + list(r["http.cookie"]) + \
            list(r["http.set_cookie"])
        if [c.upper() for c in r["pop.request.command"]] == ["PASS"]:
            values += r["pop.request.parameter"]
        for p in r["http.request.uri.query.parameter"]:
            k, _, v = p.partition("=")
            if _password_like(k):
                values.append(v)
        for k, v in zip(r["urlencoded-form.key"], r["urlencoded-form.value"], strict=False):
            if _password_like(k):
                values.append(v)
        for v in values:
            v = v.strip().strip('"')
            found.add(v)
            raw = _unb64(v)
            if raw is not None:
                found.add(raw.decode("utf-8", "replace"))
                parts = raw.split(b"\0")
                if len(parts) == 3:  # SASL PLAIN: authzid \0 authcid \0 password
                    found.add(parts[2].decode("utf-8", "replace"))
            if ":" in v and raw is None:  # Basic: user:password
                found.add(v.split(":", 1)[1])
    secrets = {v for v in found if len(v) >= 8 and not v.endswith("@lab.test")}
    for v in list(secrets):
        secrets.add(_b64(v.encode()))
    return secrets


def _password_like(key: str) -> bool:
    return key.lower() in ("password", "passwd", "pass", "pwd", "_pass", "secret", "token")


def leaks(doc: dict[str, Any], secrets: set[str]) -> list[str]:
    from labrunner.analysis.text import render

    outputs = {"json": json.dumps(doc, ensure_ascii=False), "text": render(doc)}
    return [f"{kind} output holds {s[:4]}… ({len(s)} chars)" for kind, text in outputs.items()
            for s in sorted(secrets) if s in text]


def main(argv: list[str]) -> int:
    """Write NAME.dialogue for the named cases from the current analysis (then check it by hand)."""
    for name in argv or list(CORPUS):
        doc = analyze_case(name)
        path = DIR / (name.rsplit(".", 1)[0] + ".dialogue")
        path.write_text(f"# {name}: {CORPUS[name].source}\n# stream frame dir kind first-word\n"
                        + "\n".join(outline(doc)) + "\n", encoding="utf-8")
        for d in disagreements(name, doc, tshark_rows(name)):
            print(d)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
