"""One TCP stream of analysis.json (docs/analysis.md) → what section 4 prints about it.

The dialogue table, the sequence diagram, the TLS table, the mail summaries, the statistics
and the reply-time chart, each with the figure or table number the text cites.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labrunner.report import figures
from labrunner.report.i18n import fmt
from labrunner.report.scrub import scrub_lines

# Section 4 shows the start of each dialogue and the appendix all of it, up to APPENDIX_LINES
# (a mailbox FETCH can be thousands of lines, and WeasyPrint slows down on very long tables).
DIALOGUE_SHOWN = 40
APPENDIX_LINES = 1500
ENTRY_LINES = 4  # lines of one multi-line reply shown in section 4 (the appendix has all)
LINE_CHARS = 300  # of one line in section 4
EVENT_CHARS = 4000  # of one transcript entry in the appendix (a whole message body can be one)


class Counter:
    """Figure and table numbers, assigned in document order so the text can cite them."""

    def __init__(self) -> None:
        self.figure = 0
        self.table = 0

    def next_figure(self) -> int:
        self.figure += 1
        return self.figure

    def next_table(self) -> int:
        self.table += 1
        return self.table


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def num(value: Any, digits: int = 3) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def join(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def frame_number(value: Any) -> int | None:
    """A Wireshark frame number, or None: they start at 1, so 0 or a non-number means unknown."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def cut(text: str, limit: int, t: dict[str, str]) -> str:
    return text if len(text) <= limit else text[:limit] + fmt(t["more_chars"], n=len(text) - limit)


def _first_lines(text: str, count: int, t: dict[str, str]) -> str:
    lines = [cut(line, LINE_CHARS, t) for line in text.split("\n")]
    if len(lines) <= count:
        return "\n".join(lines)
    return "\n".join(lines[:count]) + "\n" + fmt(t["more_lines"], n=len(lines) - count)


def _port(endpoint: str) -> int | None:  # "ip:port"
    head, _, port = endpoint.rpartition(":")
    return int(port) if head and port.isdigit() else None


def _endpoint(value: Any, missing: str) -> str:
    """"ip:port" from docs/analysis.md's {"ip", "port"} (a plain string is taken as it is)."""
    if isinstance(value, dict) and value.get("ip"):
        ip = str(value["ip"])
        ip = f"[{ip}]" if ":" in ip else ip
        return f"{ip}:{value['port']}" if value.get("port") is not None else ip
    return str(value) if value else missing


def build_stream(stream: dict[str, Any], t: dict[str, str], counter: Counter,
            text: Callable[[Any], str], redact: Callable[[str], str] | None,
            client_certs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    missing = t["not_captured"]
    protocol = str(stream.get("protocol") or "TCP").upper()
    client = _endpoint(stream.get("client"), missing)
    server = _endpoint(stream.get("server"), missing)
    raw = [d for d in stream.get("dialogue") or [] if isinstance(d, dict)]
    lines = []
    for d in scrub_lines(raw, redact):
        lines.append({
            "dir": d.get("dir") if d.get("dir") in ("C", "S") else "?",
            "kind": str(d.get("kind") or ""),
            "frame": frame_number(d.get("frame")) or "",
            "time": num(d.get("time"), 4) or "",
            "seconds": d.get("time") if isinstance(d.get("time"), int | float) else None,
            "text": d["text"],
            "short": _first_lines(d["text"], ENTRY_LINES, t),
            "explanation": text(d.get("explanation")),
        })
    shown = lines[:DIALOGUE_SHOWN]
    notes = [text(n) for n in stream.get("notes") or [] if n]
    if stream.get("dialogue_truncated"):
        notes.append(t["dialogue_capped"])
    st: dict[str, Any] = {
        "protocol": protocol,
        "client": client,
        "server": server,
        "security": str(stream.get("security") or ""),
        "title": fmt(t["stream_title"], protocol=protocol, client=client, server=server),
        "notes": notes,
        "lines": lines,
        "shown": shown,
        "truncated": (fmt(t["truncated"], shown=len(shown), total=len(lines))
                      if len(lines) > len(shown) else ""),
        "appendix_lines": lines[:APPENDIX_LINES],
        # the appendix repeats a dialogue only when section 4 did not show all of it
        "in_appendix": len(lines) > len(shown) or any(x["short"] != x["text"] for x in shown),
        "appendix_truncated": (fmt(t["truncated"], shown=APPENDIX_LINES, total=len(lines))
                               if len(lines) > APPENDIX_LINES else ""),
        "dialogue_table": None, "sequence_figure": None, "sequence_svg": None,
        "tls": None, "mails": [], "stats": None, "timing": None,
    }
    if lines:
        st["dialogue_table"] = counter.next_table()
        st["dialogue_caption"] = fmt(t["tab_dialogue"], protocol=protocol, client=client, server=server)
        st["sequence_figure"] = counter.next_figure()
        st["sequence_caption"] = fmt(t["fig_sequence"], protocol=protocol, client=client, server=server)
        st["sequence_svg"] = figures.sequence_diagram(
            _with_handshake(shown, stream.get("tls"), complete=len(shown) == len(lines)),
            client_label=f"{t['client']} {client}", server_label=f"{t['server']} {server}",
            uid=f"seq{st['sequence_figure']}", frame_label=t["col_frame"])
        st["dialogue_intro"] = fmt(t["dialogue_intro"], ref=fmt(t["tab_ref"], n=st["dialogue_table"]),
                                   ref2=fmt(t["fig_ref"], n=st["sequence_figure"]))
    tls = stream.get("tls")
    if isinstance(tls, dict):
        number = counter.next_table()
        server_info = stream.get("server")
        port = server_info.get("port") if isinstance(server_info, dict) else _port(server)
        messages = [m for m in tls.get("messages") or tls.get("handshake") or [] if isinstance(m, dict)]
        st["tls"] = {"table": number, "rows": _tls_rows(tls, t, client_certs.get(port) if port else None, text),
                     "caption": fmt(t["tab_tls"], server=server),
                     "handshake": _merge_by_frame(messages),
                     "intro": fmt(t["tls_intro"], ref=fmt(t["tab_ref"], n=number))}
    mails = stream.get("mail")
    if isinstance(mails, dict):  # an older single-message shape
        mails = [mails]
    for mail in mails if isinstance(mails, list) else []:
        if not isinstance(mail, dict):
            continue
        number = counter.next_table()
        st["mails"].append({"table": number, "rows": _mail_rows(mail, t, text),
                            "caption": fmt(t["tab_mail"], frame=frame_number(mail.get("frame")) or missing),
                            "intro": fmt(t["mail_intro"], ref=fmt(t["tab_ref"], n=number))})
    stats = stream.get("stats")
    if isinstance(stats, dict) and stats:
        rows = _stats_rows(stats, t)
        if rows:
            st["stats"] = {"table": counter.next_table(), "rows": rows}
    bars = figures.reply_times(lines)
    if bars:
        number = counter.next_figure()
        st["timing"] = {"figure": number, "svg": figures.timing_chart(bars, unit=t["ms"]),
                        "caption": fmt(t["fig_timing"], client=client, server=server),
                        "intro": fmt(t["timing_intro"], ref=fmt(t["fig_ref"], n=number))}
    return st


def _merge_by_frame(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Handshake messages of one frame and direction as one entry, as Wireshark's Info column shows them."""
    merged: list[dict[str, Any]] = []
    for m in messages:
        text = str(m.get("message", ""))
        if merged and merged[-1]["frame"] == m.get("frame") and merged[-1]["dir"] == m.get("dir"):
            merged[-1]["message"] += ", " + text
            continue
        merged.append({"frame": m.get("frame"), "dir": m.get("dir"), "message": text,
                       "time": num(m.get("time"), 4) or ""})
    return merged


def _with_handshake(lines: list[dict[str, Any]], tls: Any, *, complete: bool) -> list[dict[str, Any]]:
    """The dialogue with the TLS handshake messages put in by frame number, for the diagram.

    Messages that share a frame and a direction become one arrow, as Wireshark lists them in
    one row; when the dialogue is cut, only messages up to its last frame are added.
    """
    messages = [m for m in as_dict(tls).get("messages") or [] if isinstance(m, dict)
                and isinstance(m.get("frame"), int) and m.get("dir") in ("C", "S")]
    if not messages:
        return lines
    last = max((x["frame"] for x in lines if isinstance(x.get("frame"), int)), default=0)
    arrows = [{"dir": m["dir"], "frame": m["frame"], "kind": "tls", "text": m["message"], "time": m["time"]}
              for m in _merge_by_frame(messages) if complete or m["frame"] <= last]
    merged = lines + arrows
    # sorted() is stable: a handshake arrow sharing a frame with a dialogue line comes after it
    return sorted(merged, key=lambda x: x["frame"] if isinstance(x.get("frame"), int) else last)


def _stats_rows(stats: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, label in (("packets", "stat_packets"), ("frames", "stat_frames"), ("bytes", "stat_bytes")):
        if num(stats.get(key)):
            rows.append((t[label], str(num(stats.get(key)))))
    payload = stats.get("payload_bytes")
    if isinstance(payload, dict):
        for side, label in (("C", "stat_client_bytes"), ("S", "stat_server_bytes")):
            if num(payload.get(side)):
                rows.append((t[label], str(num(payload.get(side)))))
    for key, label in (("retransmissions", "stat_retransmissions"), ("duplicate_acks", "stat_duplicate_acks"),
                       ("out_of_order", "stat_out_of_order"), ("lost_segments", "stat_lost_segments")):
        if num(stats.get(key)) is not None:
            rows.append((t[label], str(num(stats.get(key)))))
    rtt = stats.get("rtt")
    if isinstance(rtt, dict) and all(isinstance(rtt.get(k), int | float) for k in ("min", "avg", "max")):
        rows.append((t["stat_rtt"], fmt(t["stat_rtt_value"], min=f"{rtt['min'] * 1000:.3f}",
                                         avg=f"{rtt['avg'] * 1000:.3f}", max=f"{rtt['max'] * 1000:.3f}",
                                         n=rtt.get("samples", "?"))))
    if num(stats.get("duration"), 4):
        rows.append((t["stat_duration"], str(num(stats.get("duration"), 4))))
    return rows


def _cert_rows(cert: dict[str, Any], t: dict[str, str], suffix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, label in (("subject", "tls_cert_subject"), ("issuer", "tls_cert_issuer"),
                       ("not_before", "tls_cert_not_before"), ("not_after", "tls_cert_not_after"),
                       ("sans", "tls_cert_sans"), ("san", "tls_cert_sans"), ("sha256", "tls_cert_sha256")):
        if cert.get(key):
            rows.append((t[label] + suffix, join(cert[key])))
    bits = cert.get("key_bits") or cert.get("key_size")
    if cert.get("key_type"):
        key = str(cert["key_type"]) + (f" {bits}" if bits else "")
        rows.append((t["tls_cert_key"] + suffix, key + (f" ({cert['curve']})" if cert.get("curve") else "")))
    return rows


def _tls_rows(tls: dict[str, Any], t: dict[str, str], client_cert: dict[str, Any] | None,
              text: Callable[[Any], str]) -> list[tuple[str, str]]:
    missing = t["not_captured"]
    suite = str(tls.get("cipher_suite") or missing)
    if tls.get("cipher_suite_id"):
        suite += f" ({tls['cipher_suite_id']})"
    rows: list[tuple[str, str]] = [(t["tls_version"], str(tls.get("version") or missing)),
                                   (t["tls_cipher_suite"], suite)]
    parts = tls.get("suite_parts")
    if isinstance(parts, dict) and parts.get("explanation"):
        rows.append((t["tls_suite_explained"], text(parts["explanation"])))
    hello, ske = as_dict(tls.get("server_hello")), as_dict(tls.get("server_key_exchange"))
    group = hello.get("key_share_group") or ske.get("curve") or tls.get("group")
    if group:
        rows.append((t["tls_group"], str(group)))
    rows.append((t["tls_sni"], str(tls.get("sni") or missing)))
    alpn = tls.get("alpn_chosen") or tls.get("alpn")
    if alpn:
        rows.append((t["tls_alpn"], join(alpn)))
    offered = as_dict(tls.get("client_hello"))
    if offered.get("supported_versions"):
        rows.append((t["tls_offered_versions"], join(offered["supported_versions"])))
    if offered.get("cipher_suites"):
        rows.append((t["tls_offered_suites"], fmt(t["tls_n_suites"], n=len(offered["cipher_suites"]))))
    if num(tls.get("round_trips")):
        rows.append((t["tls_round_trips"], str(tls["round_trips"])))
    if num(tls.get("handshake_duration"), 4):
        rows.append((t["tls_handshake_time"], f"{tls['handshake_duration'] * 1000:.1f} {t['ms']}"))
    cert = tls.get("certificate")
    if isinstance(cert, dict) and cert:
        rows += _cert_rows(cert, t)
    elif tls.get("certificate_visible") is False or "1.3" in str(tls.get("version") or ""):
        rows.append((t["tls_certificate"], t["tls_cert_encrypted"]))
        if client_cert:
            # the capture cannot show it, but the client recorded what it received
            rows += _cert_rows(client_cert, t, t["tls_client_side"])
    else:
        rows.append((t["tls_certificate"], missing))
    if tls.get("decrypted") is not None:
        rows.append((t["tls_decrypted"], t["yes"] if tls["decrypted"] else t["no"]))
    if tls.get("alert"):
        rows.append((t["tls_alert"], str(tls["alert"])))
    return rows


def _mail_rows(mail: dict[str, Any], t: dict[str, str], text: Callable[[Any], str]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (("envelope_from", "mail_envelope_from"), ("envelope_to", "mail_envelope_to"),
                       ("from", "mail_from"), ("to", "mail_to"), ("cc", "mail_cc"), ("subject", "mail_subject"),
                       ("subject_raw", "mail_subject_raw"), ("date", "mail_date"),
                       ("message_id", "mail_message_id"), ("size", "mail_size")):
        value = mail.get(key)
        if value in (None, "", []):
            if key in ("from", "to", "subject"):
                rows.append((t[label], t["not_captured"]))
            continue
        if key == "subject_raw" and value == mail.get("subject"):
            continue
        rows.append((t[label], text(join(value))))
    parts = []
    for p in mail.get("parts") or []:
        if isinstance(p, dict):
            extra = [str(p[k]) for k in ("charset", "encoding") if p.get(k)]
            if p.get("size") is not None:
                extra.append(fmt(t["n_bytes"], n=p["size"]))
            parts.append(f"{p.get('content_type') or '?'}" + (f" ({', '.join(extra)})" if extra else ""))
        else:
            parts.append(str(p))
    if parts:
        rows.append((t["mail_parts"], text("; ".join(parts))))
    files = []
    for a in mail.get("attachments") or []:
        if isinstance(a, dict):
            size = fmt(t["n_bytes"], n=a["size"]) if a.get("size") is not None else ""
            files.append(f"{a.get('filename') or '?'} ({', '.join(x for x in (a.get('content_type'), size) if x)})")
        else:
            files.append(str(a))
    if files:
        rows.append((t["mail_attachments"], text("; ".join(files))))
    if mail.get("truncated"):
        rows.append((t["mail_truncated"], t["yes"]))
    return rows
