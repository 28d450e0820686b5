"""The report's figures as SVG text, drawn in Python: WeasyPrint runs no JavaScript.

Every string that comes from a capture is XML-escaped here, because the SVG is inserted into
the page as markup; the widths are measured in "columns" (a CJK character takes two) so the
labels can be cut to fit before they are drawn, since SVG text does not wrap.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from markupsafe import Markup

MONO = "'Noto Sans Mono CJK SC', 'DejaVu Sans Mono', monospace"
SANS = "'Noto Sans CJK SC', 'DejaVu Sans', sans-serif"
CLIENT_COLOUR = "#1f5fa8"
SERVER_COLOUR = "#a83a1f"
OTHER_COLOUR = "#6b6b6b"  # TLS handshake messages, gaps, notes: not application data

# geometry of the sequence diagram (user units = CSS px)
WIDTH = 640
LEFT = 70  # client lane
RIGHT = 590  # server lane
# WeasyPrint 70 lays out SVG text one character at a time (about 0.2 ms each, the largest
# cost of the whole PDF in bench/report), so labels are cut short: the full text is in the
# dialogue table next to the figure.
LABEL_COLUMNS = 48
TOP = 44
ROW = 12  # a line of 9-unit text above each arrow, and a little air
OMITTED_ROW = 10
FONT = 9.0
CHAR = FONT * 0.6  # advance of one monospace column (DejaVu; Noto Sans Mono CJK's Latin is 0.5)
NBSP = "\u00a0"
FRAME_COLUMNS = 10  # "#12345" right-aligned before the client's lane
FRAME_X = 16  # with Noto Sans Mono CJK (0.5 em a column) the label starts at 16 + 14 * 4.5 = 79, past the heads


def columns(text: str) -> int:
    """Display width in monospace columns: wide (CJK) characters count two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def first_line(text: str) -> str:
    """The first line, with the count of the others: "250-smtp.lab.test (+9)"."""
    lines = text.split("\n")
    return lines[0] + (f" (+{len(lines) - 1})" if len(lines) > 1 else "")


def clip(text: str, width: int) -> str:
    """The first line of ``text`` cut to ``width`` columns, with an ellipsis when cut."""
    line = text.split("\n", 1)[0]
    if columns(line) <= width and "\n" not in text:
        return line
    out, used = [], 0
    for ch in line:
        w = columns(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def sequence_diagram(lines: Sequence[dict[str, Any]], *, client_label: str, server_label: str,
                     frame_label: str = "frame") -> Markup:
    """Client and server lanes with one arrow per dialogue line, labelled with the text and frame."""
    # a "left out" note is a short row: it says what is missing without drawing it
    rows = [OMITTED_ROW if line.get("kind") == "omitted" else ROW for line in lines]
    height = TOP + sum(rows) + 16
    label_cols = LABEL_COLUMNS
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure-svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="{_attr(MONO)}" font-size="{FONT}">',
    ]
    for x, label, colour in ((LEFT, client_label, CLIENT_COLOUR), (RIGHT, server_label, SERVER_COLOUR)):
        box_w = min(260, CHAR * columns(label) + 12)
        bx = min(max(x - box_w / 2, 2), WIDTH - box_w - 2)
        parts.append(f'<rect x="{bx:.1f}" y="6" width="{box_w:.1f}" height="22" rx="3" fill="#f4f6f9" '
                     f'stroke="{colour}"/>')
        parts.append(f'<text x="{bx + box_w / 2:.1f}" y="21" text-anchor="middle" fill="{colour}" '
                     f'font-family="{_attr(SANS)}">{escape(clip(label, 44))}</text>')
        parts.append(f'<line x1="{x}" y1="28" x2="{x}" y2="{height - 6}" stroke="#999" stroke-dasharray="3,3"/>')
    parts.append(f'<text x="{LEFT - 12}" y="{TOP - 8}" text-anchor="end" fill="#666">'
                 f'{escape(clip(frame_label, 12))}</text>')
    y = TOP
    for line, row in zip(lines, rows, strict=True):
        y += row
        if line.get("kind") == "omitted":
            parts.append(f'<text x="{(LEFT + RIGHT) / 2:.0f}" y="{y - 2}" text-anchor="middle" fill="{OTHER_COLOUR}" '
                         f'font-size="{FONT - 1}" font-family="{_attr(SANS)}">'
                         f'{escape(clip(str(line.get("text", "")), 90))}</text>')
            continue
        y -= 2  # the arrow a little above the row's bottom, its label above it
        from_client = line.get("dir") == "C"
        x1, x2 = (LEFT, RIGHT) if from_client else (RIGHT, LEFT)
        colour = CLIENT_COLOUR if from_client else SERVER_COLOUR
        dash = ""
        if line.get("kind") in ("tls", "gap", "note"):
            colour, dash = OTHER_COLOUR, ' stroke-dasharray="4,2"'
        # the shaft and its head as one path: an SVG marker costs WeasyPrint a drawing of its own
        d = 1 if x2 > x1 else -1
        parts.append(f'<path d="M{x1},{y}H{x2 - 7 * d}M{x2},{y}l{-7 * d},-3.5v7z" fill="{colour}" '
                     f'stroke="{colour}" stroke-width="1.1"{dash}/>')
        # handshake arrows are few and their names are the point: they get the whole lane
        width = 70 if line.get("kind") == "tls" else label_cols
        label = clip(first_line(str(line.get("text", ""))), width)
        frame = line.get("frame", "")
        frame = f"#{clip(str(frame), 8)}" if frame != "" else ""
        # the frame number and the label as one text (each SVG text costs WeasyPrint a layout):
        # the frame right-aligned in FRAME_COLUMNS, then the label past the client's lane;
        # no-break spaces, because SVG collapses ordinary ones
        pad = NBSP * (FRAME_COLUMNS - columns(frame))
        parts.append(f'<text x="{FRAME_X}" y="{y - 3}" fill="{colour}">{escape(pad + frame + NBSP * 4 + label)}</text>')
        y += 2
    parts.append("</svg>")
    return Markup("".join(parts))


def reply_times(lines: Sequence[dict[str, Any]], *,
                tls_label: str = "[TLS handshake + greeting]") -> list[tuple[str, float]]:
    """(command, milliseconds until the server's next line) for each burst of client lines.

    Consecutive client lines (a pipelined burst, or DATA and the message summary Wireshark
    adds) form one burst, timed from its last line to the first reply, so a pipelined
    command is not charged with the waiting of the ones before it. The TLS marker is no
    command: with a command after it, the bar is that command's; alone (implicit TLS, where
    the server speaks first) the bar is the handshake up to the greeting, labelled ``tls_label``
    (the marker's own sentence does not fit the chart).
    """
    bars: list[tuple[str, float]] = []
    burst: list[dict[str, Any]] = []
    for line in lines:
        seconds = line.get("seconds")
        if line.get("dir") == "C" and isinstance(seconds, int | float):
            burst.append(line)
        elif line.get("dir") == "S" and burst and isinstance(seconds, int | float):
            last = burst[-1]["seconds"]
            commands = [x for x in burst if x.get("kind") != "tls"]
            label = str(commands[0].get("text", "")).split("\n", 1)[0] if commands else tls_label
            if len(commands) > 1:
                label += f" (+{len(commands) - 1})"
            bars.append((label, max(0.0, (seconds - last) * 1000.0)))
            burst = []
    return bars


TIMING_BARS = 40  # bars of one reply-time chart; the caller says how many it left out


def timing_chart(bars: Sequence[tuple[str, float]], *, unit: str = "ms", limit: int = TIMING_BARS) -> Markup:
    """A horizontal bar per command: the time the server took to answer."""
    bars = list(bars)[:limit]
    label_w, bar_x, row = 250, 256, 12
    longest = max((ms for _, ms in bars), default=0.0) or 1.0
    span = WIDTH - bar_x - 10
    height = 14 + row * len(bars) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure-svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" font-family="{_attr(MONO)}" font-size="{FONT}">',
        f'<line x1="{bar_x}" y1="6" x2="{bar_x}" y2="{height - 4}" stroke="#999"/>',
    ]
    for i, (label, ms) in enumerate(bars):
        y = 10 + row * i
        w = max(1.0, span * ms / longest)
        # the time is printed with the command, right of it: one SVG text per bar, not two
        parts.append(f'<text x="{label_w}" y="{y + 8}" text-anchor="end">'
                     f'{escape(clip(first_line(label), 30))}{NBSP}{NBSP}{ms:.1f}{NBSP}{escape(unit)}</text>')
        parts.append(f'<rect x="{bar_x}" y="{y}" width="{w:.1f}" height="9" fill="{CLIENT_COLOUR}" '
                     'fill-opacity="0.75"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
