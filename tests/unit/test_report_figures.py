"""SVG figures: well-formed, escaped, labels cut to fit, reply times paired correctly."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from labrunner.report.figures import clip, columns, reply_times, sequence_diagram, timing_chart

SVG = "{http://www.w3.org/2000/svg}"


def texts(root: ET.Element) -> list[str]:
    """The SVG's texts with the no-break spaces that align them made plain and collapsed."""
    return [" ".join((e.text or "").replace("\xa0", " ").split()) for e in root.iter(f"{SVG}text")]


def dialogue() -> list[dict]:
    rows = [("S", 4, 0.010, "220 mail ESMTP"), ("C", 6, 0.020, "EHLO <script>alert(1)</script>"),
            ("S", 7, 0.025, "250 mail & co"), ("C", 9, 0.100, "QUIT"), ("S", 10, 0.104, "221 Bye")]
    return [{"dir": d, "frame": f, "time": f"{t:.4f}", "seconds": t, "text": x} for d, f, t, x in rows]


def test_sequence_diagram_is_valid_svg_with_one_arrow_per_line() -> None:
    svg = sequence_diagram(dialogue(), client_label="Client 10.0.0.1:4000", server_label="Server 10.0.0.2:25")
    root = ET.fromstring(str(svg))
    arrows = [e.get("d") or "" for e in root.iter(f"{SVG}path")]
    assert len(arrows) == 5
    # client lines go left to right (their head at the server's lane), server lines right to left
    assert re.match(r"M70,\d+H583M590,\d+l-7,", arrows[1])
    assert re.match(r"M590,\d+H77M70,\d+l7,", arrows[0])
    labels = texts(root)
    # one text per arrow: the frame, then the line; parsed back as text, so it was escaped
    assert "#6 EHLO <script>alert(1)</script>" in labels
    assert "<script>" not in str(svg)
    # the frame column lines up: every arrow's text starts at the same x, frames right-aligned
    raw = [e.text or "" for e in root.iter(f"{SVG}text") if "#" in (e.text or "")]
    assert len(raw) == 5 and len({e.get("x") for e in root.iter(f"{SVG}text") if "#" in (e.text or "")}) == 1
    label_starts = {re.match(r"\xa0*#\d+\xa0+", x).end() for x in raw}  # type: ignore[union-attr]
    assert len(label_starts) == 1


def test_left_out_lines_are_said_in_a_short_row_without_an_arrow() -> None:
    rows = [*dialogue()[:2], {"dir": "", "kind": "omitted", "frame": "", "text": "⋯ 7 lines not drawn (frames 8–20)"},
            *dialogue()[2:]]
    root = ET.fromstring(str(sequence_diagram(rows, client_label="c", server_label="s")))
    assert len(list(root.iter(f"{SVG}path"))) == 5
    assert "⋯ 7 lines not drawn (frames 8–20)" in texts(root)
    full = ET.fromstring(str(sequence_diagram([*dialogue(), dialogue()[0]], client_label="c", server_label="s")))
    assert float(root.get("height")) < float(full.get("height"))  # shorter than an arrow


def test_multi_line_replies_are_labelled_by_their_first_line() -> None:
    svg = sequence_diagram([{"dir": "S", "frame": 3, "text": "250-mail\n250-PIPELINING\n250 8BITMIME"}],
                           client_label="c", server_label="s")
    assert "#3 250-mail (+2)" in texts(ET.fromstring(str(svg)))


def test_clip_counts_wide_characters_twice() -> None:
    assert columns("实验5") == 5
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefgh", 6) == "abcde…"
    assert clip("实验实验实验", 6) == "实验…"
    assert columns(clip("实验实验实验", 6)) <= 6
    assert clip("line one\nline two", 40) == "line one…"


def test_reply_times_pair_each_burst_with_the_next_reply() -> None:
    rows = dialogue()
    rows.insert(4, {"dir": "C", "frame": 9, "seconds": 0.101, "text": "NOOP"})  # pipelined after QUIT
    bars = reply_times(rows)
    assert [label for label, _ in bars] == ["EHLO <script>alert(1)</script>", "QUIT (+1)"]
    assert round(bars[0][1], 3) == 5.0
    assert round(bars[1][1], 3) == 3.0  # from the last line of the burst


def test_reply_times_skip_lines_without_time() -> None:
    assert reply_times([{"dir": "C", "seconds": None, "text": "X"}, {"dir": "S", "seconds": 1.0, "text": "Y"}]) == []


def test_timing_chart_bars_scale_to_the_longest() -> None:
    root = ET.fromstring(str(timing_chart([("A", 10.0), ("B <i>", 5.0)], unit="ms")))
    widths = [float(r.get("width")) for r in root.iter(f"{SVG}rect")]
    assert widths[0] == 2 * widths[1]
    assert texts(root) == ["A 10.0 ms", "B <i> 5.0 ms"]


MARKER = "[TLS handshake begins: the rest of this connection is encrypted]"


def test_reply_times_give_the_tls_marker_a_short_label_and_time_the_command_after_it() -> None:
    implicit = [{"dir": "C", "kind": "tls", "seconds": 0.010, "text": MARKER},
                {"dir": "S", "kind": "reply", "seconds": 0.053, "text": "220 smtp.lab.test ESMTP"},
                {"dir": "C", "kind": "command", "seconds": 0.060, "text": "EHLO lab-client"},
                {"dir": "S", "kind": "reply", "seconds": 0.061, "text": "250 ok"}]
    bars = reply_times(implicit, tls_label="[TLS 握手 + 问候]")
    assert [label for label, _ in bars] == ["[TLS 握手 + 问候]", "EHLO lab-client"]
    assert round(bars[0][1], 3) == 43.0  # the handshake up to the greeting
    # HTTPS: the request follows the handshake at once; its bar is the request's, named after it
    https = [{"dir": "C", "kind": "tls", "seconds": 0.001, "text": MARKER},
             {"dir": "C", "kind": "command", "seconds": 0.005, "text": "GET / HTTP/1.1\nHost: x"},
             {"dir": "S", "kind": "reply", "seconds": 0.006, "text": "HTTP/1.1 200 OK"}]
    assert [(label, round(ms, 3)) for label, ms in reply_times(https)] == [("GET / HTTP/1.1", 1.0)]
    root = ET.fromstring(str(timing_chart(reply_times(implicit))))
    assert texts(root)[0] == "[TLS handshake + greeting] 43.0 ms"  # whole, not cut
