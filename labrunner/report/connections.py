"""One TCP stream of analysis.json (docs/analysis.md) → what section 4 prints about it.

The dialogue table, the sequence diagram, the TLS table, the mail summaries, the statistics
and the reply-time chart, each with the figure or table number the text cites.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from markupsafe import Markup

from labrunner.report import figures
from labrunner.report.i18n import fmt
from labrunner.report.scrub import scrub_lines

# Section 4 shows the lines of each dialogue that matter (the landmarks below, then the others
# in order up to DIALOGUE_SHOWN) and says what it left out; appendix A is the full record.
# Tables and figures are most of the PDF's time (bench/report), so these caps are its budget.
DIALOGUE_SHOWN = 20
LANDMARKS_MAX = 2 * DIALOGUE_SHOWN  # landmarks are kept past the cap, but not without end
DIAGRAM_ARROWS = 12  # dialogue arrows of the sequence diagram (an overview: landmarks first)
# The diagram of a connection section 4 features (the first of its protocol in an exercise):
# enough arrows for a whole SMTP submission, login and DATA phase included (issue 15)
FEATURED_ARROWS = 24
EXCERPT_SHOWN = 12  # lines of a connection section 4 shows without a diagram (the landmarks first)
APPENDIX_LINES = 1500
ENTRY_LINES = 4  # lines of one multi-line reply shown in section 4 (the appendix has all)
LINE_CHARS = 300  # of one line in section 4
EVENT_CHARS = 4000  # of one transcript entry in the appendix (a whole message body can be one)
MAIL_COLUMNS = 3  # messages side by side in one mail summary table
TEXT_COLUMNS = 44  # the dialogue text is padded to this width so the explanations line up, as in the seed

# The commands of the exercise's landmarks: greeting and TLS upgrade, login, the mail
# transfer (or retrieval) and the goodbye. IMAP puts a tag before the command.
LANDMARK_COMMANDS = frozenset({
    "HELO", "EHLO", "STARTTLS", "STLS", "AUTH", "AUTHENTICATE", "USER", "PASS", "LOGIN", "MAIL", "RCPT",
    "DATA", "BDAT", "RETR", "TOP", "FETCH", "APPEND", "QUIT", "LOGOUT", "GET", "POST", "PUT",
})
Num = int | str  # a table or figure number: 3 in the body, "B3" in an appendix


class Counter:
    """Figure and table numbers, assigned in document order so the text can cite them.

    With a ``prefix`` (an appendix letter) the numbers are "B1", "B2"...: the tables moved to
    an appendix are numbered there, so the body's numbers stay in document order.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.figure = 0
        self.table = 0
        # certificate SHA-256 -> the table that lists it: the same server certificate shows up
        # in several scenarios, and its details are printed once
        self.certificates: dict[str, Num] = {}
        self.suites: dict[str, Num] = {}  # cipher suite -> the table that explains it
        self.tls_params: dict[str, Num] = {}  # negotiated parameters -> the first table listing them
        self.mail_rows: dict[str, Num] = {}  # a mail summary's rows -> the first table printing them

    def next_figure(self) -> Num:
        self.figure += 1
        return f"{self.prefix}{self.figure}" if self.prefix else self.figure

    def next_table(self) -> Num:
        self.table += 1
        return f"{self.prefix}{self.table}" if self.prefix else self.table


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


def _short(text: str, t: dict[str, str]) -> str:
    """One line for section 4: a multi-line reply joined with " | " as the seed writes it."""
    lines = [cut(line, LINE_CHARS, t) for line in text.split("\n")]
    if len(lines) <= ENTRY_LINES:
        return " | ".join(lines)
    return " | ".join(lines[:ENTRY_LINES]) + " " + fmt(t["more_lines"], n=len(lines) - ENTRY_LINES)


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


def _verb(text: str) -> str:
    words = text.split(None, 2)
    if not words:
        return ""
    first = words[0].upper()
    if first not in LANDMARK_COMMANDS and len(words) > 1:
        return words[1].upper()  # an IMAP tag comes first
    return first


_ERROR_REPLY = re.compile(r"^(?:[45]\d\d[\s-]|-ERR\b|\S+ (?:NO|BAD)\b|HTTP/\S+ [45]\d\d)", re.IGNORECASE)


def _tiers(lines: list[dict[str, Any]]) -> list[int]:
    """How much each line matters: 0 must be seen (the greeting, errors, gaps), 1 a landmark
    of the exercise (TLS, login, mail transfer, goodbye), 2 the reply to a landmark, 3 the rest."""
    tiers = []
    previous_landmark = False
    for i, line in enumerate(lines):
        kind, text = line["kind"], line["text"]
        if i == 0 or kind in ("gap", "note") or (line["dir"] == "S" and _ERROR_REPLY.match(text)):
            tier = 0
        elif kind in ("tls", "auth", "data") or (line["dir"] == "C" and _verb(text) in LANDMARK_COMMANDS):
            tier = 1
        elif line["dir"] == "S" and previous_landmark:
            tier = 2
        else:
            tier = 3
        if line["dir"] == "C":
            previous_landmark = tier <= 1
        tiers.append(tier)
    return tiers


def select_lines(lines: list[dict[str, Any]], cap: int, *, landmarks_max: int) -> list[int]:
    """Indexes of the lines to show, in order: every line that matters (up to ``landmarks_max``),
    then the others in order until ``cap`` lines are shown."""
    if len(lines) <= cap:
        return list(range(len(lines)))
    tiers = _tiers(lines)
    ranked = sorted(range(len(lines)), key=lambda i: (tiers[i], i))
    chosen = [i for i in ranked if tiers[i] < 3][:landmarks_max]
    chosen += [i for i in ranked if tiers[i] == 3][:max(0, cap - len(chosen))]
    return sorted(chosen)


# The parts of an exercise the diagram's overview shows once each before any repeats
_CATEGORY = {
    **dict.fromkeys(("HELO", "EHLO"), "hello"), **dict.fromkeys(("STARTTLS", "STLS"), "tls"),
    **dict.fromkeys(("AUTH", "AUTHENTICATE", "USER", "PASS", "LOGIN"), "auth"),
    **dict.fromkeys(("MAIL", "RCPT", "DATA", "BDAT", "RETR", "TOP", "FETCH", "APPEND", "GET", "POST", "PUT"),
                    "transfer"),
    **dict.fromkeys(("QUIT", "LOGOUT"), "quit"),
}
_KIND_CATEGORY = {"tls": "tls", "auth": "auth", "data": "transfer"}


def overview_lines(lines: list[dict[str, Any]], cap: int, *, whole: frozenset[str] = frozenset()) -> list[int]:
    """Indexes of the lines the sequence diagram draws: whole exchanges (a command and its
    replies), the greeting and any error first, then the first exchange of each part of the
    exercise (hello, TLS, login, transfer, quit), then repeats and the rest, while ``cap``
    lines are not reached. Every exchange of a part named in ``whole`` ("auth", "transfer")
    ranks with the first ones: a featured diagram shows the whole login and DATA phase."""
    if len(lines) <= cap:
        return list(range(len(lines)))
    exchanges: list[list[int]] = []
    for i, line in enumerate(lines):
        # the TLS marker stands alone: the command after it is the first under encryption
        if (not exchanges or (line["dir"] != "S" and lines[i - 1]["dir"] == "S")
                or "tls" in (line["kind"], lines[i - 1]["kind"])):
            exchanges.append([])
        exchanges[-1].append(i)
    tiers = _tiers(lines)
    seen: dict[str, int] = {}
    ranked = []
    for n, ex in enumerate(exchanges):
        head = lines[ex[0]] if lines[ex[0]]["dir"] == "C" or len(ex) == 1 else lines[ex[-1]]
        category = _KIND_CATEGORY.get(head["kind"]) or _CATEGORY.get(_verb(head["text"])) if head["dir"] == "C" \
            else None
        if min(tiers[i] for i in ex) == 0:
            rank: tuple[int, int, int] = (0, 0, n)
        elif category in whole:
            rank = (1, 0, n)
        elif category:
            rank = (1, seen.get(category, 0), n)
            seen[category] = seen.get(category, 0) + 1
        else:
            rank = (2, 0, n)
        ranked.append((rank, ex))
    chosen: list[int] = []
    for rank, ex in sorted(ranked):
        if rank[0] == 0 or len(chosen) + len(ex) <= cap:
            chosen += ex
    return sorted(chosen)


def _frames(lines: list[dict[str, Any]]) -> str:
    numbers = [x["frame"] for x in lines if isinstance(x["frame"], int)]
    if not numbers:
        return ""
    lo, hi = min(numbers), max(numbers)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def with_gaps(lines: list[dict[str, Any]], keep: list[int], t: dict[str, str], appendix: str,
              key: str = "lines_left_out") -> list[dict[str, Any]]:
    """The kept lines, with one "left out" entry where consecutive lines were not kept."""
    out: list[dict[str, Any]] = []
    last = -1
    for i in [*keep, len(lines)]:
        if i > last + 1:
            skipped = lines[last + 1:i]
            frames = _frames(skipped)
            first = [x["frame"] for x in skipped if isinstance(x["frame"], int)]
            out.append({"dir": "", "kind": "omitted", "frame": "", "time": "", "seconds": None,
                        "sort_frame": first[0] if first else None,
                        "text": fmt(t[key if frames else key + "_noframe"],
                                    n=len(skipped), frames=frames, ref=appendix),
                        "short": "", "pad": "", "explanation": "", "omitted": len(skipped)})
        if i < len(lines):
            out.append(lines[i])
        last = i
    return out


def build_stream(stream: dict[str, Any], t: dict[str, str], counter: Counter,
                 text: Callable[[Any], str], redact: Callable[[str], str] | None,
                 client_certs: dict[int, dict[str, Any]], *, number: str = "",
                 appendix: str = "", visible: Callable[[str], str] = str,
                 annex: Counter | None = None, mail_annex: Counter | None = None, in_body: bool = True,
                 featured: bool = True) -> dict[str, Any]:
    """What section 4 prints about one stream. ``number`` is its heading number ("4.3.2"),
    ``appendix`` the appendix section that holds its full record ("A.3.2"), and ``visible``
    marks characters of captured text that no installed font can draw.

    The body/appendix split (issue 15): the TLS parameters and the mail summaries are numbered
    by ``annex`` (the appendix's counter) when one is given; a stream not ``in_body`` (the same
    kind of connection as one an earlier section showed) gets no dialogue table and has its
    whole dialogue in appendix A; only a ``featured`` one gets a sequence diagram, with the
    whole login and DATA phase. ``mail_annex`` numbers the mail summaries."""
    protocol = str(stream.get("protocol") or "TCP").upper()
    client = _endpoint(stream.get("client"), t["not_captured"])
    server = _endpoint(stream.get("server"), t["not_captured"])
    raw = [d for d in stream.get("dialogue") or [] if isinstance(d, dict)]
    lines = [_dialogue_line(d, t, text, visible) for d in scrub_lines(raw, redact)]
    # a connection without its own diagram (another variant of one just shown) gets an excerpt
    keep = (select_lines(lines, DIALOGUE_SHOWN, landmarks_max=LANDMARKS_MAX) if featured
            else select_lines(lines, EXCERPT_SHOWN, landmarks_max=EXCERPT_SHOWN))
    notes = [visible(text(n)) for n in stream.get("notes") or [] if n]
    if stream.get("dialogue_truncated"):
        notes.append(t["dialogue_capped"])
    left_out = len(lines) - len(keep)
    kept = set(keep)
    st: dict[str, Any] = {
        "protocol": protocol,
        "client": client,
        "server": server,
        "number": number,
        "appendix_anchor": None,  # set when appendix A has this connection's full record
        "security": str(stream.get("security") or ""),
        "title": fmt(t["stream_title"], protocol=protocol, client=client, server=server),
        "notes": notes,
        "lines": lines,
        "shown": with_gaps(lines, keep, t, appendix),
        "left_out": left_out,
        "omitted_lines": [x for i, x in enumerate(lines) if i not in kept],
        "truncated": (fmt(t["truncated"], shown=len(keep), total=len(lines), ref=appendix)
                      if left_out else ""),
        "appendix_lines": lines[:APPENDIX_LINES],
        # the appendix must hold whatever section 4 cut: lines left out, or lines of a reply
        "in_appendix": not in_body or bool(left_out) or any(x["short"] != x["text"] for x in lines),
        "in_body": in_body,
        "appendix_truncated": (fmt(t["truncated_appendix"], shown=APPENDIX_LINES, total=len(lines))
                               if len(lines) > APPENDIX_LINES else ""),
        "dialogue_table": None, "sequence_figure": None, "sequence_svg": None,
        "tls": None, "tls_summary": None, "tls_raw": None, "mails": [], "stats": None, "bars": [],
    }
    if lines and in_body:
        _add_dialogue(st, stream, t, counter, appendix, featured)
    tls = stream.get("tls")
    if isinstance(tls, dict):
        _add_tls(st, stream, tls, t, text, visible, annex or counter, client_certs)
    st["mails"] = _mail_groups(stream, t, text, visible, mail_annex or counter)
    stats = stream.get("stats")
    if isinstance(stats, dict) and stats:
        st["stats"] = _stats_cells(stats, t)
    st["bars"] = figures.reply_times(lines, tls_label=t["bar_tls"])
    return st


def _dialogue_line(d: dict[str, Any], t: dict[str, str], text: Callable[[Any], str],
                   visible: Callable[[str], str]) -> dict[str, Any]:
    """One line of analysis.json's dialogue (already scrubbed) as section 4 and appendix A print it."""
    full = visible(d["text"])
    short = _short(full, t)
    return {
        "dir": d.get("dir") if d.get("dir") in ("C", "S") else "?",
        "kind": str(d.get("kind") or ""),
        "frame": frame_number(d.get("frame")) or "",
        "time": num(d.get("time"), 4) or "",
        "seconds": d.get("time") if isinstance(d.get("time"), int | float) else None,
        "text": full,
        "short": short,
        # spaces that line the explanations up in one column, like the seed's // comments
        "pad": " " * max(2, TEXT_COLUMNS - figures.columns(short)),
        "explanation": visible(text(d.get("explanation"))),
    }


def _add_dialogue(st: dict[str, Any], stream: dict[str, Any], t: dict[str, str], counter: Counter,
                  appendix: str, featured: bool) -> None:
    """The numbers of the dialogue table of section 4 and, for a ``featured`` connection, its
    sequence diagram (the whole login and DATA phase, with the TLS handshake drawn in)."""
    protocol, client, server, lines = st["protocol"], st["client"], st["server"], st["lines"]
    st["dialogue_table"] = counter.next_table()
    st["dialogue_caption"] = fmt(t["tab_dialogue"], protocol=protocol, client=client, server=server)
    st["dialogue_intro"] = fmt(t["dialogue_intro_alone"], ref=fmt(t["tab_ref"], n=st["dialogue_table"]))
    if not featured:
        return
    st["sequence_figure"] = counter.next_figure()
    st["sequence_caption"] = fmt(t["fig_sequence"], protocol=protocol, client=client, server=server)
    arrows = overview_lines(lines, FEATURED_ARROWS, whole=frozenset(("auth", "transfer")))
    overview = with_gaps(lines, arrows, t, appendix, "arrows_left_out")
    st["sequence_svg"] = figures.sequence_diagram(
        _with_handshake(overview, stream.get("tls")),
        client_label=f"{t['client']} {client}", server_label=f"{t['server']} {server}",
        frame_label=t["col_frame"])
    st["dialogue_intro"] = fmt(t["dialogue_intro"], ref=fmt(t["tab_ref"], n=st["dialogue_table"]),
                               ref2=fmt(t["fig_ref"], n=st["sequence_figure"]))


def _add_tls(st: dict[str, Any], stream: dict[str, Any], tls: dict[str, Any], t: dict[str, str],
             text: Callable[[Any], str], visible: Callable[[str], str], annex: Counter,
             client_certs: dict[int, dict[str, Any]]) -> None:
    """The stream's TLS table (numbered by ``annex``), or a reference to the first one with the
    same parameters, and its one-line summary for section 4."""
    server_info = stream.get("server")
    port = server_info.get("port") if isinstance(server_info, dict) else _port(st["server"])
    client_cert = client_certs.get(port) if port else None
    # a connection negotiating what an earlier one did gets no table of its own: one row
    # of the appendix's table of connections refers to the first one (merged, issue 15)
    same_as = annex.tls_params.get(_tls_signature(tls, client_cert)) if _tls_cert(tls, client_cert) else None
    number_tls = same_as if same_as is not None else annex.next_table()
    messages = [m for m in tls.get("messages") or tls.get("handshake") or [] if isinstance(m, dict)]
    rows = _tls_rows(tls, t, client_cert, text, annex, number_tls)
    st["tls_summary"] = _tls_summary(tls, t, client_cert, number_tls, same_as is not None)
    st["tls_raw"] = tls  # for the handshake walk-through (context._tls_walkthrough)
    st["tls"] = {"table": number_tls, "same_as": same_as,
                 # a list of names is already escaped markup (its chosen entry in bold)
                 "rows": [(k, v if isinstance(v, Markup) else visible(v)) for k, v in rows],
                 "lists": [k for k, v in rows if isinstance(v, Markup)],
                 "caption": fmt(t["tab_tls"], server=st["server"]),
                 "handshake": _merge_by_frame(messages),
                 "intro": (fmt(t["tls_intro_figure"], ref=fmt(t["tab_ref"], n=number_tls),
                               ref2=fmt(t["fig_ref"], n=st["sequence_figure"]))
                           if st["sequence_figure"] and messages
                           else fmt(t["tls_intro"], ref=fmt(t["tab_ref"], n=number_tls)))}


def _mail_groups(stream: dict[str, Any], t: dict[str, str], text: Callable[[Any], str],
                 visible: Callable[[str], str], mail_annex: Counter) -> list[dict[str, Any]]:
    """The mail summaries of one connection: the messages side by side, a column each (POP3 TOP
    and RETR of one message, say), one table per MAIL_COLUMNS messages instead of one each."""
    mails = stream.get("mail")
    if isinstance(mails, dict):  # an older single-message shape
        mails = [mails]
    mails = [m for m in mails if isinstance(m, dict)] if isinstance(mails, list) else []
    out = []
    for group in (mails[i:i + MAIL_COLUMNS] for i in range(0, len(mails), MAIL_COLUMNS)):
        frames = [str(frame_number(m.get("frame")) or t["not_captured"]) for m in group]
        rows = _mail_table(group, t, text, visible)
        # the same message fetched the same way on another connection (POP3 over STLS and over
        # 995, say): one line referring to the table that printed it (issue 18: less repeated text)
        same_as = mail_annex.mail_rows.get(repr(rows))
        number_mail = same_as if same_as is not None else mail_annex.next_table()
        mail_annex.mail_rows.setdefault(repr(rows), number_mail)
        out.append({"table": number_mail, "same_as": same_as, "rows": rows, "frames": frames,
                    "caption": fmt(t["tab_mail" if len(group) == 1 else "tab_mails"], frame=", ".join(frames)),
                    "same": fmt(t["mail_same"], frames=", ".join(frames), ref=fmt(t["tab_ref"], n=number_mail)),
                    "intro": fmt(t["mail_intro"], ref=fmt(t["tab_ref"], n=number_mail))})
    return out


def scenario_timings(streams: list[dict[str, Any]], t: dict[str, str], counter: Counter) -> dict[str, Any] | None:
    """One statistics table and one reply-time chart for all the connections of a scenario."""
    rows = [(st["number"], st["protocol"], st["stats"]) for st in streams if st["stats"]]
    out: dict[str, Any] = {"stats": None, "timing": None}
    if rows:
        out["stats"] = {"table": counter.next_table(), "rows": rows}
    bars = [(f"{st['number'].rsplit('.', 1)[-1]}: {label}", ms) for st in streams for label, ms in st["bars"]]
    if bars:
        number = counter.next_figure()
        shown = bars[:figures.TIMING_BARS]
        out["timing"] = {"figure": number, "svg": figures.timing_chart(shown, unit=t["ms"]),
                         "caption": t["fig_timing_scenario"],
                         "left_out": (fmt(t["bars_left_out"], shown=len(shown), total=len(bars))
                                      if len(bars) > len(shown) else ""),
                         "intro": fmt(t["timing_intro"], ref=fmt(t["fig_ref"], n=number))}
    if not out["stats"] and not out["timing"]:
        return None
    return out


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


def _with_handshake(lines: list[dict[str, Any]], tls: Any) -> list[dict[str, Any]]:
    """The dialogue with the TLS handshake messages put in by frame number, for the diagram.

    Messages that share a frame and a direction become one arrow, as Wireshark lists them in
    one row. A "left out" entry sorts by the first frame it stands for; a line without a frame
    stays after the line before it.
    """
    # the orderly close (close_notify) says nothing about the exercise; any other alert is drawn
    messages = [m for m in as_dict(tls).get("messages") or [] if isinstance(m, dict)
                and isinstance(m.get("frame"), int) and m.get("dir") in ("C", "S")
                and "close_notify" not in str(m.get("message"))]
    if not messages:
        return lines
    keyed: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    carry = 0
    for i, x in enumerate(lines):
        frame = x.get("sort_frame") if x.get("kind") == "omitted" else x.get("frame")
        if isinstance(frame, int):
            carry = frame
        keyed.append(((carry, 0, i), x))
    for j, m in enumerate(_merge_by_frame(messages)):
        # after a dialogue line of the same frame
        keyed.append(((m["frame"], 1, j), {"dir": m["dir"], "frame": m["frame"], "kind": "tls",
                                            "text": m["message"], "time": m["time"]}))
    return [x for _, x in sorted(keyed, key=lambda kx: kx[0])]


def _stats_cells(stats: dict[str, Any], t: dict[str, str]) -> dict[str, str]:
    """One row of the scenario's statistics table; "–" where the analysis recorded nothing."""
    def value(key: str, digits: int = 3) -> str:
        return num(stats.get(key), digits) or "–"

    payload = as_dict(stats.get("payload_bytes"))
    tcp = [num(stats.get(k)) for k in ("retransmissions", "duplicate_acks", "out_of_order", "lost_segments")]
    rtt = as_dict(stats.get("rtt"))
    rtt_text = "–"
    if all(isinstance(rtt.get(k), int | float) for k in ("min", "avg", "max")):
        rtt_text = fmt(t["stat_rtt_cell"], min=f"{rtt['min'] * 1000:.3f}", avg=f"{rtt['avg'] * 1000:.3f}",
                       max=f"{rtt['max'] * 1000:.3f}", n=rtt.get("samples", "?"))
    return {
        "packets": value("packets") if stats.get("packets") is not None else value("frames"),
        "bytes": value("bytes"),
        "client_bytes": num(payload.get("C")) or "–",
        "server_bytes": num(payload.get("S")) or "–",
        "tcp": " / ".join(x if x is not None else "–" for x in tcp),
        "rtt": rtt_text,
        "duration": value("duration", 4),
    }


def _cert_rows(cert: dict[str, Any], t: dict[str, str], suffix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, label in (("subject", "tls_cert_subject"), ("issuer", "tls_cert_issuer"),
                       ("sans", "tls_cert_sans"), ("san", "tls_cert_sans"), ("sha256", "tls_cert_sha256")):
        if cert.get(key):
            rows.append((t[label] + suffix, join(cert[key])))
        if key == "issuer" and (cert.get("not_before") or cert.get("not_after")):
            rows.append((t["tls_cert_validity"] + suffix,
                         f"{cert.get('not_before') or '?'} – {cert.get('not_after') or '?'}"))
    bits = cert.get("key_bits") or cert.get("key_size")
    if cert.get("key_type"):
        key = str(cert["key_type"]) + (f" {bits}" if bits else "")
        rows.append((t["tls_cert_key"] + suffix, key + (f" ({cert['curve']})" if cert.get("curve") else "")))
    return rows


def _cert_or_reference(cert: dict[str, Any], t: dict[str, str], counter: Counter, table: Num,
                       suffix: str = "") -> list[tuple[str, str]]:
    """The certificate's rows, or one row pointing at the table that already listed the same one."""
    sha = str(cert.get("sha256") or "")
    if sha and sha in counter.certificates:
        return [(t["tls_certificate"] + suffix,
                 fmt(t["tls_cert_same"], ref=fmt(t["tab_ref"], n=counter.certificates[sha]),
                     subject=join(cert.get("subject")) or "?", sha=sha[:23] + "…"))]
    if sha:
        counter.certificates[sha] = table
    return _cert_rows(cert, t, suffix)


def _tls_rows(tls: dict[str, Any], t: dict[str, str], client_cert: dict[str, Any] | None,
              text: Callable[[Any], str], counter: Counter, table: Num) -> list[tuple[str, str]]:
    missing = t["not_captured"]
    suite = str(tls.get("cipher_suite") or missing)
    if tls.get("cipher_suite_id"):
        suite += f" ({tls['cipher_suite_id']})"
    version = str(tls.get("version") or missing)
    group = _group(tls)
    first = counter.tls_params.setdefault(_tls_signature(tls, client_cert), table)
    if first != table and _tls_cert(tls, client_cert).get("sha256"):
        # a connection negotiating what an earlier one did (the same server, another exercise):
        # the shared parameters once, by reference; what belongs to this connection in full
        same = fmt(t["tls_params_same"], ref=fmt(t["tab_ref"], n=first), version=version, suite=suite,
                   group=group or missing)
        return [(t["tls_params"], same), (t["tls_sni"], str(tls.get("sni") or missing)),
                *_tls_connection_rows(tls, t)]
    rows: list[tuple[str, str]] = [(t["tls_version"], version), (t["tls_cipher_suite"], suite)]
    parts = tls.get("suite_parts")
    if isinstance(parts, dict) and parts.get("explanation"):
        first = counter.suites.setdefault(suite, table)
        # the same suite is negotiated on most connections: explained once, then referred to
        rows.append((t["tls_suite_explained"], text(parts["explanation"]) if first == table
                     else fmt(t["tls_suite_same"], ref=fmt(t["tab_ref"], n=first))))
    if group:
        rows.append((t["tls_group"], str(group)))
    rows.append((t["tls_sni"], str(tls.get("sni") or missing)))
    return rows + _offered_rows(tls, t, group) + _server_cert_rows(tls, t, client_cert, counter, table) \
        + _tls_connection_rows(tls, t)


def _offered_rows(tls: dict[str, Any], t: dict[str, str], group: Any) -> list[tuple[str, str]]:
    """What the Client Hello offered, with what the server took from it: the lab asks which
    suites the client listed and which one the server chose."""
    offered = as_dict(tls.get("client_hello"))
    rows: list[tuple[str, str]] = []
    versions = offered.get("supported_versions") or offered.get("version")
    if versions:
        rows.append((t["tls_offered_versions"], join(versions)))
    for key, label, chosen in (("cipher_suites", "tls_offered_suites", tls.get("cipher_suite")),
                               ("supported_groups", "tls_offered_groups", group)):
        listed = [str(x) for x in offered.get(key) or []]
        if listed:
            rows.append((fmt(t[label], n=len(listed)), _marked(listed, str(chosen or ""), t["tls_chosen"])))
    return rows


def _server_cert_rows(tls: dict[str, Any], t: dict[str, str], client_cert: dict[str, Any] | None,
                      counter: Counter, table: Num) -> list[tuple[str, str]]:
    """The server certificate's rows: from the capture; under TLS 1.3 (encrypted) the one the
    client recorded, marked so; a reference where an earlier table listed the same one."""
    cert = tls.get("certificate")
    if isinstance(cert, dict) and cert:
        return _cert_or_reference(cert, t, counter, table)
    if tls.get("certificate_visible") is False or "1.3" in str(tls.get("version") or ""):
        rows = [(t["tls_certificate"], t["tls_cert_encrypted"])]
        if client_cert:
            # the capture cannot show it, but the client recorded what it received
            rows += _cert_or_reference(client_cert, t, counter, table, t["tls_client_side"])
        return rows
    return [(t["tls_certificate"], t["not_captured"])]


def _group(tls: dict[str, Any]) -> Any:
    hello, ske = as_dict(tls.get("server_hello")), as_dict(tls.get("server_key_exchange"))
    return hello.get("key_share_group") or ske.get("curve") or tls.get("group")


def _tls_cert(tls: dict[str, Any], client_cert: dict[str, Any] | None) -> dict[str, Any]:
    """The server certificate: from the capture, else the one the client recorded."""
    cert = tls.get("certificate")
    return cert if isinstance(cert, dict) and cert else client_cert or {}


def _tls_signature(tls: dict[str, Any], client_cert: dict[str, Any] | None) -> str:
    """What two connections share when they negotiate the same thing with the same server."""
    offered = as_dict(tls.get("client_hello"))
    return repr((str(tls.get("version") or ""), str(tls.get("cipher_suite") or ""), tls.get("cipher_suite_id"),
                 _group(tls), offered.get("supported_versions"), offered.get("cipher_suites"),
                 offered.get("supported_groups"), _tls_cert(tls, client_cert).get("sha256")))


def _tls_summary(tls: dict[str, Any], t: dict[str, str], client_cert: dict[str, Any] | None,
                 table: Num, repeated: bool) -> dict[str, Any]:
    """One line of section 4 (and one row of the appendix's table of TLS connections)."""
    missing = t["not_captured"]
    cert = _tls_cert(tls, client_cert)
    handshake = num(tls.get("handshake_duration"), 4)
    return {
        "version": str(tls.get("version") or missing),
        "suite": str(tls.get("cipher_suite") or missing),
        "group": str(_group(tls) or "–"),
        "sni": str(tls.get("sni") or "–"),
        "subject": join(cert.get("subject")) or "–",
        "round_trips": num(tls.get("round_trips")) or "–",
        "handshake_ms": f"{tls['handshake_duration'] * 1000:.1f}" if handshake else "–",
        "decrypted": t["yes"] if tls.get("decrypted") else t["no"] if tls.get("decrypted") is False else "–",
        "table": table,
        "repeated": repeated,
        "line": fmt(t["tls_summary_line"], version=tls.get("version") or missing,
                    suite=tls.get("cipher_suite") or missing, group=_group(tls) or "–",
                    subject=join(cert.get("subject")) or "–", ref=fmt(t["tab_ref"], n=table)),
    }


def _marked(names: list[str], chosen: str, mark: str) -> Markup:
    """The names comma-separated, the chosen one in bold with ``mark`` after it."""
    return Markup(", ").join(Markup("<b>{}</b>{}").format(name, mark) if name == chosen else name
                             for name in names)


def _tls_connection_rows(tls: dict[str, Any], t: dict[str, str]) -> list[tuple[str, str]]:
    """What differs between connections with the same parameters: ALPN, the handshake's
    round trips and time, decryption, the alert."""
    rows = []
    alpn = tls.get("alpn_chosen") or tls.get("alpn")
    if alpn:
        rows.append((t["tls_alpn"], join(alpn)))
    if num(tls.get("round_trips")):
        rows.append((t["tls_round_trips"], str(tls["round_trips"])))
    if num(tls.get("handshake_duration"), 4):
        rows.append((t["tls_handshake_time"], f"{tls['handshake_duration'] * 1000:.1f} {t['ms']}"))
    if tls.get("decrypted") is not None:
        rows.append((t["tls_decrypted"], t["yes"] if tls["decrypted"] else t["no"]))
    if tls.get("alert"):
        rows.append((t["tls_alert"], str(tls["alert"])))
    return rows


def _mail_table(mails: list[dict[str, Any]], t: dict[str, str], text: Callable[[Any], str],
                visible: Callable[[str], str]) -> list[tuple[str, list[tuple[str, int]]]]:
    """(label, [(value, columns it spans)]) for every field any of the messages has; a value
    all the messages share is printed once across their columns."""
    per_mail = [dict(_mail_rows(m, t, text)) for m in mails]
    labels: list[str] = []
    for rows in per_mail:
        labels += [k for k in rows if k not in labels]
    out = []
    for k in labels:
        values = [visible(rows.get(k, "–")) for rows in per_mail]
        out.append((k, [(values[0], len(values))] if len(set(values)) == 1 else [(v, 1) for v in values]))
    return out


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
        elif key != "subject_raw" or value != mail.get("subject"):
            rows.append((t[label], text(join(value))))
    parts = [_mail_part(p, t) for p in mail.get("parts") or []]
    if parts:
        rows.append((t["mail_parts"], text("; ".join(parts))))
    files = [_mail_attachment(a, t) for a in mail.get("attachments") or []]
    if files:
        rows.append((t["mail_attachments"], text("; ".join(files))))
    if mail.get("truncated"):
        rows.append((t["mail_truncated"], t["yes"]))
    return rows


def _mail_part(part: Any, t: dict[str, str]) -> str:
    """"text/plain (utf-8, base64, 64 bytes)": one MIME part of a mail summary."""
    if not isinstance(part, dict):
        return str(part)
    extra = [str(part[k]) for k in ("charset", "encoding") if part.get(k)]
    if part.get("size") is not None:
        extra.append(fmt(t["n_bytes"], n=part["size"]))
    return f"{part.get('content_type') or '?'}" + (f" ({', '.join(extra)})" if extra else "")


def _mail_attachment(attachment: Any, t: dict[str, str]) -> str:
    """"notes.txt (text/plain, 120 bytes)": one attachment of a mail summary."""
    if not isinstance(attachment, dict):
        return str(attachment)
    size = fmt(t["n_bytes"], n=attachment["size"]) if attachment.get("size") is not None else ""
    kind = ", ".join(x for x in (attachment.get("content_type"), size) if x)
    return f"{attachment.get('filename') or '?'} ({kind})"
