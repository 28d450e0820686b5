"""The lab.yaml files and the CLI calls the pipeline tests share.

Each test writes a lab.yaml of its own (a temporary output folder, a sandbox instance, the
shipped scenarios unless it brings its own) and drives the real CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"


def write_lab(folder: Path, instance: str, *, output: str = "output", scenarios_dir: Path | str = SCENARIOS,
              student: tuple[str, str, str] = ("王五", "2020000001", "计科2001"), lang: str = "zh",
              profiles: str = "", inventory: str = "") -> Path:
    """``profiles`` adds YAML lines under ``profiles:`` (indented two spaces), ``inventory``
    the lines of an ``inventory:`` list."""
    folder.mkdir(parents=True, exist_ok=True)
    name, sid, klass = (json.dumps(v, ensure_ascii=False) for v in student)
    text = f"""default_profile: sandbox
scenarios_dir: {scenarios_dir}
output_dir: {output}
report:
  school: 测试大学
  course: 计算机网络
  lab: 实验5 电子邮件
  student: {{name: {name}, id: {sid}, class: {klass}}}
  lang: {lang}
profiles:
  sandbox:
    from_sandbox: true
    instance: {instance}
{profiles}"""
    if inventory:
        text += f"inventory:\n{inventory}"
    lab = folder / "lab.yaml"
    lab.write_text(text, encoding="utf-8")
    return lab


def cli(lab: Path, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
    """`labrunner ARGS -c LAB` as a student types it, no terminal on stdin."""
    res = subprocess.run([sys.executable, "-m", "labrunner", *args, "-c", str(lab)], capture_output=True,
                         text=True, timeout=timeout, cwd=lab.parent, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"labrunner {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


@contextlib.contextmanager
def small_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real, small file system at ``folder`` (tmpfs ``-o options``), to fill up in a test."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def analyze(capture: Path, **options: Any) -> dict[str, Any]:
    """The analysis as a reader in ``lang`` sees it: what the analysis words itself is
    {zh, en} in the document (docs/analysis.md), here in that language."""
    from labrunner.analysis import analyze as both
    from labrunner.text import in_language

    return in_language(both(capture, **options), options.get("lang", "zh"))
