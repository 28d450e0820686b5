"""HTML rendering: the Jinja2 environment (user templates first, then the built-in ones).

Like Pelican's theme loader, a ``ChoiceLoader`` looks in the user's folder before the
built-in ``labrunner/templates/`` (package data: a wheel install has them), so a course can
replace one partial (the cover, say) or the CSS and keep the rest. Autoescape is on for every
HTML/SVG file and the environment is strict: an unknown variable or message key fails the
render instead of printing an empty string.

A run folder is data, never code: the templates come from the project (the built-in
``labrunner/templates/``, lab.yaml's ``report.templates`` or ``--templates``), never from a path a run
folder's manifest.json names, and Jinja runs in its ``SandboxedEnvironment`` (no ``__globals__``,
no ``os.system`` from a template), so rendering a folder someone handed in runs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labrunner.errors import ReportError, UsageError

# the package's own folder (pyproject.toml: package data), wherever the package is installed
BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ENTRY = "report.html"


def builtin_templates() -> Path:
    if not (BUILTIN_TEMPLATES / ENTRY).is_file():
        raise ReportError(f"the built-in report templates are missing from {BUILTIN_TEMPLATES}",
                          hint="reinstall labrunner (its wheel carries labrunner/templates/)")
    return BUILTIN_TEMPLATES


def environment(templates_dir: Path | str | None = None) -> Any:
    """The Jinja environment for a templates folder (None: the built-in ones only).

    The built-in one is made once per process and compiled ahead (``warm``): compiling the
    templates costs ~0.25 s, ten times their rendering, and a class run renders one report
    per student. A user's folder gets a fresh one each time: Jinja notices an edited file by
    its mtime alone, which two quick edits can share, and a course edits its templates.
    """
    folder = None
    if templates_dir:
        folder = Path(templates_dir).expanduser()
        if not folder.is_dir():
            raise UsageError(f"report templates folder {folder} does not exist",
                             hint="fix report.templates in lab.yaml or --templates")
        return _make_environment(folder.resolve(), builtin_templates())
    return _builtin_environment(builtin_templates())


def warm() -> None:
    """Compile the built-in templates ahead of the render (the runner calls it during the run)."""
    env = environment()
    for name in env.list_templates(extensions=["html", "svg"]):
        with contextlib.suppress(Exception):  # a broken one is reported, in context, by the render
            env.get_template(name)


@functools.lru_cache(maxsize=2)
def _builtin_environment(builtin: Path) -> Any:
    return _make_environment(None, builtin)


def _make_environment(folder: Path | None, builtin: Path) -> Any:
    import jinja2
    import jinja2.sandbox

    search: list[jinja2.BaseLoader] = []
    if folder is not None:
        search.append(jinja2.FileSystemLoader(str(folder)))
    search.append(jinja2.FileSystemLoader(str(builtin)))
    return jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(search),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_string(context: dict[str, Any], *, templates_dir: Path | str | None = None) -> str:
    import jinja2
    import jinja2.sandbox

    env = environment(templates_dir)
    try:
        return str(env.get_template(ENTRY).render(**context))
    except jinja2.TemplateSyntaxError as exc:
        raise ReportError(f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}",
                          hint="fix the template, or remove it to use the built-in one") from exc
    except jinja2.UndefinedError as exc:
        raise ReportError(f"a report template uses an unknown name: {exc.message}",
                          hint="templates may only use the names of the report context "
                               "(see labrunner/templates/README.md)") from exc
    except jinja2.sandbox.SecurityError as exc:
        raise ReportError(f"a report template tried something a template may not do: {exc}",
                          hint="templates may only print the report context "
                               "(see labrunner/templates/README.md)") from exc
    except jinja2.TemplateNotFound as exc:
        raise ReportError(f"report template {exc.name!r} not found",
                          hint="an overriding template includes a file that exists nowhere") from exc
    except Exception as exc:
        if not templates_dir:
            raise  # the built-in templates failing is a bug: traceback with --debug
        # a user's template can fail in any way Jinja can (a filter on the wrong type, ...)
        raise ReportError(f"a template in {templates_dir} failed: {type(exc).__name__}: {exc}",
                          hint="fix it, or remove it to use the built-in one") from exc


def report_name(lang: str, run_lang: str, suffix: str) -> str:
    """report.html / report.pdf in the run's language, report.en.html beside it in another."""
    return f"report{suffix}" if lang == run_lang else f"report.{lang}{suffix}"


def render_html(
    run_dir: Path, *, templates_dir: Path | str | None = None, lang: str | None = None,
    redact: Callable[[str], str] | None = None, allow_mixed: bool = False,
    words: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/report.html`` (one self-contained file) and return its path.

    A report in another language than the run's goes beside it, as ``report.<lang>.html``:
    `labrunner report --lang en` must not overwrite the Chinese report (issue 15).
    ``templates_dir``: the project's folder of overriding templates (lab.yaml's
    ``report.templates`` or ``--templates``); None for the built-in ones only.
    ``words``: the student's current words (report/words.py) instead of the manifest's copies."""
    from labrunner.report.context import build_context
    from labrunner.runfolder import write_bytes_atomic
    from labrunner.textsafe import in_page

    run_dir = Path(run_dir)
    context = build_context(run_dir, lang=lang, redact=redact, allow_mixed=allow_mixed, words=words)
    # every control character, bidi override and lone surrogate that reached the page (a server's
    # reply, a subject, a hand-edited file: whatever the path) shown escaped, never raw (F22)
    html = in_page(render_string(context, templates_dir=templates_dir))
    out = run_dir / report_name(context["lang"], context["run_lang"], ".html")
    # a lone surrogate (JSON "\\ud800" in a hand-edited transcript.json) is shown escaped, not exit 4
    write_bytes_atomic(out, html.encode("utf-8", "backslashreplace"))
    return out


def render_report(
    run_dir: Path, *, pdf: bool = True, templates_dir: Path | str | None = None, lang: str | None = None,
    redact: Callable[[str], str] | None = None, allow_mixed: bool = False,
    words: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Render report.html and (unless ``pdf`` is false) report.pdf.

    Returns ``{"html": Path, "pdf": Path | None, "timings": {"html": s, "pdf": s}}``.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    html_path = render_html(run_dir, templates_dir=templates_dir, lang=lang, redact=redact, allow_mixed=allow_mixed,
                            words=words)
    timings["html"] = time.perf_counter() - started
    pdf_path = None
    if pdf:
        from labrunner.report.pdf import render_pdf

        started = time.perf_counter()
        pdf_path = render_pdf(run_dir, html_path, templates_dir=templates_dir)
        timings["pdf"] = time.perf_counter() - started
    return {"html": html_path, "pdf": pdf_path, "timings": timings}
