"""Screenshots in the student's notes (issue 15): ``![QQ 邮箱设置](shots/qq.png)``.

A note may show local images: the path is relative to the file the note is in (the scenario
file, or lab.yaml for the report's texts) and must stay inside the project folder (the folder
of lab.yaml): no absolute path, no ``..`` out of it, no symlink out of it, no URL. Before a run
every image is checked (a missing one is one line naming the file and the note, exit 2); when
the run writes its manifest each image is copied into the run folder (the scenario's own folder
for its notes, so it travels with it, ``images/`` of the run for lab.yaml's texts) and the
note points there; the report then embeds it as a data: URL, in the HTML and so in the PDF.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from markupsafe import Markup

from labrunner.errors import UsageError

if TYPE_CHECKING:
    from labrunner.runfolder import Manifest

IMAGES = "images"  # the folder, in the run folder or a scenario's, that holds the copies
TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".webp": "image/webp"}
MAX_BYTES = 10 * 1024 * 1024  # a screenshot; more is a mistake (and a slow PDF)


def image_sources(markdown: str) -> list[str]:
    """The src of every image of a Markdown text, as the report's Markdown parser reads them."""
    from markdown_it import MarkdownIt

    found: list[str] = []
    for token in MarkdownIt("commonmark", {"html": False}).enable("table").parse(markdown):
        for child in token.children or []:
            if child.type == "image":
                src = child.attrGet("src")
                if isinstance(src, str):
                    found.append(src)
    return found


def _source_path(src: str, base: Path, project: Path, where: str) -> Path:
    """The file ``src`` names, checked: local, inside ``project``, a picture, not too large."""
    fix = (f"put the image in the project folder {project} (beside the file of the note) and write a "
           "relative path, e.g. ![QQ 邮箱设置](shots/qq-settings.png)")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", src) or src.startswith("//"):
        raise UsageError(f"{where}: image {src!r} is not a local file: notes can show only images of the "
                         "project folder", hint="download it and " + fix)
    name = unquote(src)
    if Path(name).is_absolute():
        raise UsageError(f"{where}: image {src!r} is an absolute path", hint=fix)
    path = base / name
    root = project.resolve()
    if not path.resolve().is_relative_to(root):
        raise UsageError(f"{where}: image {src!r} is outside the project folder {project}", hint=fix)
    if not path.is_file():
        raise UsageError(f"{where}: image {src!r} not found (looked for {path})", hint=fix)
    if path.suffix.lower() not in TYPES:
        raise UsageError(f"{where}: image {src!r} is not a PNG, JPEG, GIF or WebP file",
                         hint="save the screenshot as .png or .jpg")
    if path.stat().st_size > MAX_BYTES:
        raise UsageError(f"{where}: image {src!r} is larger than {MAX_BYTES // (1024 * 1024)} MB",
                         hint="save a smaller screenshot (a PNG of one window is enough)")
    return path


def check_images(markdown: str, base: Path, project: Path, where: str) -> None:
    """Raise UsageError (one line) for the first image of ``markdown`` that cannot be shown."""
    for src in image_sources(markdown):
        _source_path(src, base, project, where)


def copy_images(markdown: str, base: Path, project: Path, dest: Path, where: str) -> str:
    """``markdown`` with each local image copied into ``dest/images`` and pointing there
    (``images/<hash>.png``, relative to ``dest``)."""
    for src in dict.fromkeys(image_sources(markdown)):
        path = _source_path(src, base, project, where)
        data = path.read_bytes()
        name = f"{hashlib.sha256(data).hexdigest()[:16]}{path.suffix.lower()}"
        target = dest / IMAGES / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        markdown = _replace_src(markdown, src, f"{IMAGES}/{name}")
    return markdown


_LINK = re.compile(r"(!\[[^\]]*\]\(\s*)(<[^>\n]*>|[^\s)]+)")


def _replace_src(markdown: str, src: str, new: str) -> str:
    """Point the image links whose destination the parser reads as ``src`` at ``new``
    (``](dest)``, ``](dest "title")``, ``](<dest with spaces>)``, percent-encoded or not)."""
    from markdown_it import MarkdownIt

    normalize = MarkdownIt("commonmark").normalizeLink

    def swap(m: re.Match[str]) -> str:
        dest = m.group(2)[1:-1] if m.group(2).startswith("<") else m.group(2)
        return m.group(1) + new if unquote(normalize(dest)) == unquote(src) else m.group(0)

    return _LINK.sub(swap, markdown)


_IMG = re.compile(r'<img src="([^"]*)"')


def embed_images(html: Markup | None, folder: Path) -> Markup | None:
    """The rendered note with its copied images (``images/...`` under ``folder``) as data: URLs,
    so report.html stays one self-contained file and the PDF has them."""
    if html is None or "<img" not in html:
        return html

    def inline(m: re.Match[str]) -> str:
        src = unquote(m.group(1))
        head, _, name = src.partition("/")
        path = folder / IMAGES / name
        if head != IMAGES or "/" in name or not path.is_file() or path.suffix.lower() not in TYPES:
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:{TYPES[path.suffix.lower()]};base64,{data}"'

    return Markup(_IMG.sub(inline, str(html)))


def _texts(lab: Any, scenarios: list[Any]) -> list[tuple[str, Any, Path, str]]:
    """(manifest key or scenario name, Text, base folder, where) of every note a run reports."""
    project = lab.path.parent
    out = [(key, getattr(lab.report, key), project, f"{lab.path.name}: report.{key}")
           for key in ("reflections", "problems")]
    out += [(sc.name, sc.notes, sc.path.parent, f"{sc.path.name}: notes") for sc in scenarios]
    return out


def check_run_images(lab: Any, scenarios: list[Any]) -> None:
    """Before a run: every image of lab.yaml's texts and of the selected scenarios' notes can be shown."""
    for _, text, base, where in _texts(lab, scenarios):
        for lang in ("zh", "en"):
            check_images(getattr(text, lang), base, lab.path.parent, f"{where}.{lang}")


def copy_run_images(lab: Any, scenarios: list[Any], manifest: Manifest, run_dir: Path) -> None:
    """Copy the images of the notes into the run folder and point the manifest's notes there:
    a scenario's into its own folder (it travels with it when a later run reuses it), lab.yaml's
    texts' into ``run_dir/images``."""
    from labrunner.runfolder import Text

    project = lab.path.parent
    ran = {sc.name for sc in scenarios}
    entries = {e.name: e for e in manifest.scenarios if e.name in ran and e.run_id == manifest.run_id}
    for key, text, base, where in _texts(lab, scenarios):
        if key in ("reflections", "problems"):
            dest = run_dir
        elif key in entries:
            dest = run_dir / key
        else:
            continue
        zh, en = (copy_images(getattr(text, lang), base, project, dest, f"{where}.{lang}") for lang in ("zh", "en"))
        copied = Text(zh=zh, en=en)
        if key in ("reflections", "problems"):
            setattr(manifest, key, copied)
        else:
            entries[key].notes = copied
