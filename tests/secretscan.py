"""A scanner for secrets in files labrunner wrote, for any test to reuse.

The forms are computed here, independently of labrunner/secrets.py, so a form that module
forgets is still found: the plain text; base64 padded and unpadded, and the three "cores" of
the secret's base64 inside any longer blob (one per offset mod 3); the AUTH PLAIN responses
``\\0user\\0pass`` and ``user\\0user\\0pass`` and HTTP Basic ``user:pass`` in base64;
URL-encoded (quote, quote_plus); hex; JSON-escaped (with and without \\u escapes); Python's
repr and ascii(); and UTF-16 (little and big endian, in the raw bytes).

Each file is read as raw bytes, as UTF-8 text, HTML-unescaped, and a PDF as ``pdftotext``'s
text, with and without its whitespace (a PDF's raw bytes are compressed: scanning them proves
nothing). Usage, from a test in tests/unit or tests/integration::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
    import secretscan
    assert not secretscan.scan_tree(output_dir, password, users=[address])   # [] when clean
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

# Written 0600 on purpose and flagged in the report: the capture holds the traffic, the key log
# the TLS secrets. Their mode is checked instead of their content.
PRIVATE = ("capture.pcapng", "capture.pcap", "keylog.txt")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def text_forms(secret: str, users: Iterable[str] = ()) -> dict[str, str]:
    """Every text spelling of ``secret``, by a name saying which it is."""
    raw = secret.encode("utf-8")
    forms = {"plain": secret, "base64": _b64(raw), "base64 unpadded": _b64(raw).rstrip("=")}
    for pad in range(3):
        enc = _b64(b"\0" * pad + raw)
        core = enc[(pad * 4 + 2) // 3 + 1:-4]
        if len(core) >= 8:
            forms[f"base64 core at offset {pad}"] = core
    for user in users:
        u = user.encode("utf-8")
        forms[f"AUTH PLAIN \\0{user}\\0pass"] = _b64(b"\0" + u + b"\0" + raw)
        forms[f"AUTH PLAIN {user}\\0{user}\\0pass"] = _b64(u + b"\0" + u + b"\0" + raw)
        forms[f"base64 of {user}:pass"] = _b64(u + b":" + raw)
    forms.update({
        "url quote": urllib.parse.quote(secret, safe=""),
        "url quote (safe /)": urllib.parse.quote(secret),
        "url quote_plus": urllib.parse.quote_plus(secret),
        "hex": raw.hex(), "HEX": raw.hex().upper(),
        "json": json.dumps(secret)[1:-1], "json (utf-8)": json.dumps(secret, ensure_ascii=False)[1:-1],
        "repr": repr(secret)[1:-1], "ascii": ascii(secret)[1:-1], "bytes repr": repr(raw)[2:-1],
    })
    for name, form in list(forms.items()):
        if name.startswith(("base64", "AUTH")) and form != form.replace("/", "\\/"):
            forms[name + " (json \\/)"] = form.replace("/", "\\/")
    return {name: form for name, form in forms.items() if form}


def byte_forms(secret: str) -> dict[str, bytes]:
    """Spellings only raw bytes can hold: UTF-16."""
    return {"utf-16-le": secret.encode("utf-16-le"), "utf-16-be": secret.encode("utf-16-be")}


def readings(path: Path) -> list[str]:
    """The texts a reader of ``path`` may see: UTF-8, HTML-unescaped, a PDF's text layer."""
    data = path.read_bytes()
    texts = [data.decode("utf-8", "replace")]
    if path.suffix == ".pdf":
        layer = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True,
                               text=True, check=True).stdout
        texts += [layer, re.sub(r"\s+", "", layer)]
    texts += [html.unescape(t) for t in texts]
    return texts


def leaks(text: str, secret: str, users: Iterable[str] = ()) -> list[str]:
    """The names of the forms of ``secret`` that ``text`` holds."""
    return sorted(name for name, form in text_forms(secret, users).items() if form in text)


def scan_file(path: Path, secret: str, users: Iterable[str] = ()) -> list[str]:
    users = list(users)
    found = {name for name, form in byte_forms(secret).items() if form in path.read_bytes()}
    forms = text_forms(secret, users)
    for text in readings(path):
        found |= {name for name, form in forms.items() if form in text}
        # whitespace taken out of the text (a PDF breaks lines anywhere): the forms without theirs
        squeezed = re.sub(r"\s+", "", text)
        found |= {name for name, form in forms.items() if len(form) >= 8 and re.sub(r"\s+", "", form) in squeezed}
    return sorted(found)


def scan_tree(root: Path, secret: str, users: Iterable[str] = (),
              private: Iterable[str] = PRIVATE) -> list[tuple[Path, str]]:
    """(file, form) for every form of ``secret`` in every file under ``root``, except the private
    files, which must be mode 0600 (a private file readable by others is reported as a leak)."""
    users, private = list(users), set(private)
    found: list[tuple[Path, str]] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if path.name in private:
            if path.stat().st_mode & 0o077:
                found.append((path, "a private file readable by others"))
            continue
        found += [(path, name) for name in scan_file(path, secret, users)]
    return found


def scanned_files(root: Path, private: Iterable[str] = PRIVATE) -> list[Path]:
    """The files :func:`scan_tree` reads under ``root`` (to check a scan saw what it should)."""
    private = set(private)
    return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and p.name not in private]
