"""report.html → report.pdf with WeasyPrint, after checking that every character has a glyph.

A PDF renderer that lacks a glyph draws an empty box and carries on; a student would only
notice when the teacher does. So before rendering we ask fontconfig for the fonts the CSS
names and for their character sets, and refuse to render text that none of them (and no
other installed font) can draw.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labrunner.errors import LabError, ReportError, ToolMissing
from labrunner.textsafe import in_page

# The fonts report.css names, in the order it names them (body, headings, code), and the
# fonts WeasyPrint falls back to on Debian. Their union is what the PDF can draw.
CJK_FONTS = ("Noto Serif CJK SC", "Noto Sans CJK SC", "Noto Sans Mono CJK SC")
FALLBACK_FONTS = ("DejaVu Sans", "DejaVu Sans Mono", "DejaVu Serif")
FONT_HINT = "install the CJK fonts: `sudo apt-get install fonts-noto-cjk` (scripts/setup.sh does it)"


def _fc(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        raise ToolMissing(f"{args[0]} (fontconfig) is not installed; it is needed to render the PDF",
                          hint="sudo apt-get install fontconfig")
    res = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    return res.stdout


def _parse_charset(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for part in spec.split():
        lo, _, hi = part.partition("-")
        try:
            ranges.append((int(lo, 16), int(hi or lo, 16)))
        except ValueError:
            continue
    return ranges


@functools.lru_cache(maxsize=1)
def font_coverage() -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """(families found, merged code point ranges they cover), via fontconfig.

    Raises ReportError when fontconfig knows no Chinese font or none of the CJK fonts the CSS names.
    """
    if not _fc(["fc-list", ":lang=zh", "family"]).strip():
        raise ReportError("no font with Chinese glyphs is installed, so the PDF cannot show Chinese text",
                          hint=FONT_HINT)
    found: list[str] = []
    ranges: list[tuple[int, int]] = []
    for family in CJK_FONTS + FALLBACK_FONTS:
        out = _fc(["fc-match", "-f", "%{family}\n%{charset}", family])
        got, _, charset = out.partition("\n")
        # fc-match always answers with some font: only count the family we asked for
        if family not in got.split(","):
            continue
        found.append(family)
        ranges.extend(_parse_charset(charset))
    if not any(f in found for f in CJK_FONTS):
        raise ReportError(f"none of the fonts the report uses is installed ({', '.join(CJK_FONTS)})",
                          hint=FONT_HINT)
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(found), tuple(merged)


def _covered(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    import bisect

    i = bisect.bisect_right(ranges, (cp, 0x10FFFF)) - 1
    return i >= 0 and ranges[i][0] <= cp <= ranges[i][1]


_TAG = re.compile(r"<style.*?</style>|<[^>]+>", re.DOTALL | re.IGNORECASE)
_DRAWABLE: dict[str, bool] = {}  # characters already looked up, for this process


def _drawable(ch: str, ranges: tuple[tuple[int, int], ...]) -> bool:
    cp = ord(ch)
    if cp < 0x20 or ch.isspace() or _covered(cp, ranges):
        return True
    known = _DRAWABLE.get(ch)
    if known is None:
        # not in the report's fonts: WeasyPrint may still find another installed font for it
        known = _DRAWABLE[ch] = bool(_fc(["fc-list", f":charset={cp:x}", "family"]).strip())
    return known


def missing_glyphs(text_html: str) -> dict[str, str]:
    """Characters of the page's text that no installed font can draw: {char: some context}."""
    _, ranges = font_coverage()
    text = html.unescape(_TAG.sub(" ", text_html))
    missing: dict[str, str] = {}
    # each distinct character once (a report is ~100 000 characters, a few hundred distinct),
    # in the order of its first appearance so the error names the first one
    for ch in sorted(set(text), key=text.index):
        if not _drawable(ch, ranges):
            i = text.index(ch)
            missing[ch] = text[max(0, i - 20): i + 20].replace("\n", " ").strip()
    return missing


def glyph_marker(ch: str) -> str:
    return f"[U+{ord(ch):04X}]"


def visible(text: str) -> str:
    """Captured text with each character no installed font can draw shown as "[U+XXXX]".

    A subject, a mail body or a server's reply is data the run recorded: the PDF shows where
    such a character was instead of refusing to exist (the report's own text and the student's
    notes keep the hard check in render_pdf). Without fontconfig or the fonts the text is
    returned as it is: render_pdf then stops with its own one-line error.
    """
    text = in_page(text)
    if text.isascii():
        return text
    try:
        _, ranges = font_coverage()
    except (ReportError, ToolMissing, OSError, subprocess.SubprocessError):
        return text
    if all(_drawable(ch, ranges) for ch in text):
        return text
    return "".join(ch if _drawable(ch, ranges) else glyph_marker(ch) for ch in text)


class _WholeString(str):
    """A string that iterates as one piece: WeasyPrint's SVG text loop then lays it out once."""

    def __iter__(self) -> Iterator[str]:
        yield str(self)


_PER_CHARACTER = ("dx", "dy", "rotate", "textLength", "letter-spacing")


def whole_string_svg_text() -> None:
    """Lay out plain SVG text as one string instead of one Pango layout per character.

    WeasyPrint 70 draws every SVG ``<text>`` character by character (so that per-character
    x/dx/rotate lists work), about 0.2 ms each: the figures' few thousand characters were
    the largest single cost of the PDF (bench/report). Our figures never use per-character
    positions, so a text with at most one x and one y is handed over as a single piece; the
    glyphs land where they did (the same advances, now with the font's own shaping). Any
    other text, or another WeasyPrint whose SVG code looks different, keeps the original.
    """
    import weasyprint.svg as wsvg

    original = getattr(wsvg, "text", None)
    if getattr(original, "labrunner_whole_string", False) or not callable(original) \
            or wsvg.TAGS.get("text") is not original:
        return

    def text(svg: Any, node: Any, font_size: float) -> Any:
        raw = node._etree_node.text
        attrib = node.attrib
        if (not raw or len(raw) < 2 or any(k in attrib for k in _PER_CHARACTER)
                or any(len(re.split(r"[\s,]+", str(attrib.get(k, "")).strip())) > 1 for k in ("x", "y"))):
            return original(svg, node, font_size)
        node._etree_node.text = _WholeString(raw)
        try:
            return original(svg, node, font_size)
        finally:
            node._etree_node.text = raw

    text.labrunner_whole_string = True  # type: ignore[attr-defined]
    # svg.draw_node recognises text nodes by comparing TAGS[tag] with the module's `text`
    wsvg.text = text
    for tag, fn in list(wsvg.TAGS.items()):
        if fn is original:
            wsvg.TAGS[tag] = text


def _confined(url: str, roots: tuple[Path, ...], refused: list[str]) -> str:
    """The URL WeasyPrint may fetch for ``url``: a data: URL, or a file: URL of a file inside one
    of ``roots`` (symlinks resolved). Anything else is added to ``refused`` and raises ValueError:
    WeasyPrint renders without the resource."""
    from urllib.parse import unquote, urlsplit
    from urllib.request import url2pathname

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "data":
        return url
    if scheme == "file" and parts.netloc in ("", "localhost"):
        path = Path(url2pathname(unquote(parts.path)))
        if path.is_file():
            real = path.resolve()
            if any(real.is_relative_to(root) for root in roots):
                return real.as_uri()
    refused.append(url)
    raise ValueError(f"not fetched: the report embeds only files inside the run folder and the "
                     f"templates folder, not {url[:200]}")


def confined_url_fetcher(*roots: Path, refused: list[str] | None = None) -> Any:
    """A WeasyPrint URL fetcher that serves only data: URLs and files under ``roots`` (the run
    folder and the templates folders): no http/https (a note's ``![](http://...)`` must not make
    the renderer call out), no file elsewhere (``![](/etc/...)`` must not be embedded).

    WeasyPrint >= 68 takes a URLFetcher subclass, older versions a function. The URLs it refuses
    are added to ``refused``."""
    real = tuple(Path(r).resolve() for r in roots)
    seen: list[str] = [] if refused is None else refused
    try:
        from weasyprint.urls import URLFetcher
    except ImportError:  # WeasyPrint < 68
        from weasyprint import default_url_fetcher

        def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
            return default_url_fetcher(_confined(url, real, seen), *args, **kwargs)

        return fetch

    class Confined(URLFetcher):
        def fetch(self, url: str, headers: Any = None) -> Any:
            return super().fetch(_confined(url, real, seen), headers)

    return Confined(allowed_protocols=("file", "data"), allow_redirects=False)


# What report.html shows and the PDF does not (the reply-time charts): the templates put it
# between these markers. A comment cannot come from captured or student text (autoescaped).
_SCREEN_ONLY = re.compile(r"<!--labrunner:screen-only-->.*?<!--/labrunner:screen-only-->", re.DOTALL)


def pdf_source(page: str) -> str:
    """report.html as WeasyPrint gets it: without the parts only the browser shows. print.css
    hides them too (a course's own templates may not mark them), but an element WeasyPrint does
    not draw still costs its CSS cascade: the six reply-time charts' SVG was 2 % of the PDF."""
    return _SCREEN_ONLY.sub("", page)


def render_pdf(run_dir: Path, html_path: Path | None = None, *,
               templates_dir: Path | str | None = None) -> Path:
    """Write ``run_dir/report.pdf`` from report.html (rendered first by render_html); from
    report.en.html, report.en.pdf.

    Only files under the run folder and the templates folders are fetched (confined_url_fetcher)."""
    from labrunner.report.render import BUILTIN_TEMPLATES
    from labrunner.runfolder import REPORT_HTML, atomic_file

    run_dir = Path(run_dir)
    html_path = Path(html_path) if html_path else run_dir / REPORT_HTML
    try:
        source = pdf_source(html_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{html_path} does not exist", hint="render the HTML first (`labrunner report`)") from None
    missing = missing_glyphs(source)
    if missing:
        ch, where = next(iter(missing.items()))
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ReportError(
            f"no installed font has a glyph for U+{ord(ch):04X} {ch!r} (in “{where}”){more}; "
            "the PDF would show an empty box",
            hint="remove the character from the notes, or install a font that has it")

    import logging

    import weasyprint

    # WeasyPrint logs every CSS property it ignores at WARNING; our CSS targets browsers too
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    whole_string_svg_text()
    out = run_dir / (html_path.stem + ".pdf")  # report.en.html -> report.en.pdf
    try:
        roots = [run_dir, BUILTIN_TEMPLATES] + ([Path(templates_dir).expanduser()] if templates_dir else [])
        # a fresh temporary file (O_EXCL | O_NOFOLLOW) renamed onto report.pdf: a symlink planted
        # in the run folder is never written through
        refused: list[str] = []
        with atomic_file(out) as fh:
            # the evidence travels with the PDF: manifest, analyses, sanitized captures (issue 16)
            from labrunner.evidence.attach import pdf_attachments

            weasyprint.HTML(string=source, base_url=str(run_dir),
                            url_fetcher=confined_url_fetcher(*roots, refused=refused)).write_pdf(
                fh, attachments=pdf_attachments(run_dir))
    except LabError:
        raise
    except OSError as exc:
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except Exception as exc:  # WeasyPrint on HTML/CSS it cannot lay out (user templates)
        raise ReportError(f"WeasyPrint could not render {html_path}: {type(exc).__name__}: {exc}",
                          hint="check any overriding templates; run with --debug for the traceback") from exc
    if refused:  # one line: what the PDF leaves out and why (the HTML still names them)
        shown = ", ".join(repr(u[:120]) for u in dict.fromkeys(refused))
        print(f"labrunner: note: report.pdf leaves out what is not a file inside the run folder: {shown}",
              file=sys.stderr)
    return out
