"""The command line: thin subcommands over the library.

Each expected failure (a LabError) is printed as one line with its hint and mapped to an exit
status; a traceback is shown only with ``--debug``. Heavy modules (paramiko, weasyprint) are
imported inside the subcommands that need them, so ``labrunner --help`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labrunner import __version__

if TYPE_CHECKING:
    from pathlib import Path
from labrunner.errors import ConfigError, ExitStatus, LabError, UsageError
from labrunner.textsafe import safe

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
Run the e-mail lab (SMTP, POP3, IMAP, HTTPS/TLS) on a target host over SSH, capture its
traffic with tcpdump, analyse it with Wireshark's dissectors and write the report (HTML, PDF).
在目标主机上运行电子邮件实验，抓包、分析并生成实验报告。"""

EPILOG = """\
quick start:
  labrunner sandbox up        start the built-in practice lab (root; no cloud account needed)
  labrunner run               run every scenario and write output/latest/report.pdf
  labrunner run telnet-smtp   re-run one scenario; the report keeps the others
  labrunner report            re-render the report from the latest run, offline
  labrunner verify FILE.pdf   (teachers) check a report against the captures it carries

exit status: 0 ok, 1 a scenario or check failed, 2 bad input, 3 environment
(host, server, missing tool), 4 bug, 130 interrupted.
中文帮助：LANG=zh_CN.UTF-8 labrunner COMMAND --help"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=None, metavar="LAB_YAML",
        help="the lab file (default: ./lab.yaml, or $LABRUNNER_CONFIG)",
    )


def _config_path(args: argparse.Namespace) -> str:
    # -c after the subcommand, else before it (`labrunner -c lab.yaml run`), else the default
    return args.config or getattr(args, "top_config", None) or os.environ.get("LABRUNNER_CONFIG") or "lab.yaml"


# --- validate -----------------------------------------------------------------


def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check lab.yaml and every scenario file; print each problem")
    _common(p)
    p.add_argument("-p", "--profile",
                   help="the profile whose files (the SSH key) are checked too (default: default_profile)")
    p.add_argument("scenarios", nargs="*", help="only these scenario names (default: all)")
    p.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from labrunner.config.load import validate

    # One pass over lab.yaml and the scenarios: a broken lab.yaml does not hide their problems.
    given = _config_path(args)
    lab, scenarios = validate(given, args.scenarios or None, profile=args.profile)
    from labrunner.report.images import check_run_images

    check_run_images(lab, scenarios)  # the screenshots the notes show: there, in the project folder
    # The path as the user typed it: an absolute one would be long and not what they wrote.
    print(f"ok: {given} and {len(scenarios)} scenario(s) are valid")
    return ExitStatus.OK


# --- list ---------------------------------------------------------------------


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="show the scenarios, their titles and their latest result")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from labrunner.config.load import load_lab, load_scenarios
    from labrunner.runfolder import latest_results

    lab = load_lab(_config_path(args))
    scenarios = load_scenarios(lab, None)
    results = latest_results(lab.output_dir)
    rows = []
    for sc in scenarios:
        res = results.get(sc.name)
        rows.append({
            "name": sc.name,
            "title": sc.title.get(lab.report.lang),
            "section": sc.section,
            "status": res.status if res is not None else "never run",
            "run": res.run_id if res is not None else "",
        })
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return ExitStatus.OK
    width = max((len(r["name"]) for r in rows), default=4)
    latest = [r["status"] + (f" ({r['run']})" if r["run"] else "") for r in rows]
    # the title last: Chinese characters take two columns, so nothing after it would line up
    shown = max((len(x) for x in latest), default=0)
    for r, last in zip(rows, latest, strict=True):
        print(safe(f"{r['name']:<{width}}  {r['section']:<4} {last:<{shown}}  {r['title']}"))
    return ExitStatus.OK


# --- run ----------------------------------------------------------------------


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the experiment: every scenario (or those named), then the report",
        description="Connect to the target once; for each scenario capture with tcpdump, run the "
        "mail/web sessions, stop, download and analyse; then render report.html and report.pdf.",
    )
    _common(p)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="re-run only these; the report reuses the latest successful result of the others")
    p.add_argument("-p", "--profile", help="profile of lab.yaml to use (default: default_profile, 'sandbox')")
    p.add_argument("--failed", action="store_true", help="re-run what did not pass last time")
    p.add_argument("--no-pdf", action="store_true", help="write report.html only")
    p.add_argument("--lang", choices=["zh", "en"], help="language of the report (default: report.lang)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--inventory", action="store_true",
                   help="teaching assistants: run on every target of lab.yaml's inventory, one report each")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="with --inventory: how many targets at once (default 4)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="SCENARIO=CAPTURE[,KEYLOG]",
                   help="put your own capture (Wireshark's pcap/pcapng, with the browser's SSLKEYLOGFILE) into the "
                   "report as SCENARIO, instead of running its sessions; runs only the imported scenarios "
                   "(and those named)")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import json

    from labrunner.config.load import load_lab
    from labrunner.run.lab import run_lab
    from labrunner.run.outcome import RunOptions

    if args.parallel is not None and not args.inventory:
        raise UsageError(f"--parallel {args.parallel} only applies to a class run",
                         hint="add --inventory to run every target of lab.yaml's inventory, or leave out --parallel")
    lab = load_lab(_config_path(args))
    if args.inventory:
        return _run_inventory(lab, args)
    from labrunner.importer import parse_cli

    imports = parse_cli(args.imports, lab.path.parent)
    outcome = run_lab(lab, RunOptions(
        profile=args.profile, scenarios=[*args.scenarios, *(n for n in imports if n not in args.scenarios)],
        failed_only=args.failed, pdf=not args.no_pdf, lang=args.lang, imports=imports,
    ))
    rows = [{"scenario": o.name, "status": o.status, "duration": o.duration, "frames": o.frames,
             "error": o.error} for o in outcome.outcomes]
    if args.json:
        print(json.dumps({
            "run": str(outcome.run_dir) if outcome.run_dir else None, "scenarios": rows,
            "report_html": str(outcome.report_html) if outcome.report_html else None,
            "report_pdf": str(outcome.report_pdf) if outcome.report_pdf else None,
            "report_error": outcome.report_error, "interrupted": outcome.interrupted,
        }, ensure_ascii=False, indent=2))
    else:
        _print_summary(rows)
        if outcome.report_html and outcome.run_dir is not None:
            # before the paths: a run (and `make demo`) ends with the path of the report
            todo = _template_text_left(lab, outcome.run_dir, args.lang or lab.report.lang)
            if todo:
                sys.stdout.flush()
                print(todo, file=sys.stderr, flush=True)
        if outcome.report_html:
            print(f"report.html: {outcome.report_html}")
        if outcome.report_pdf:
            print(f"report.pdf:  {outcome.report_pdf}")
    if outcome.interrupted:
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK if outcome.ok else ExitStatus.FAILED


# The shipped lab.yaml and scenarios hold these where the student's own words go.
_TEMPLATE_TEXT = ("（在此写下", "(Write your")


def _template_text_left(lab: Any, run_dir: Path, lang: str) -> str | None:
    """One line for a report that still holds the template's placeholders: where to write."""
    from labrunner import runfolder
    from labrunner.report.words import SECTIONS

    places = []
    for section in SECTIONS:  # reflections, problems ...: what lab.yaml holds now
        text = getattr(getattr(lab.report, section, None), lang, "") or ""
        if any(mark in text for mark in _TEMPLATE_TEXT):
            places.append(f"{lab.path.name}: report.{section}.{lang}")
    try:
        entries = runfolder.Manifest.read(run_dir).scenarios
    except LabError:  # the report said what is wrong with it already
        entries = []
    # the notes as the scenario files hold them now (a reused scenario's may be newer than its run)
    try:
        from labrunner.config.load import load_scenarios

        current = {sc.name: getattr(sc.notes, lang) for sc in load_scenarios(lab, None)}
    except (LabError, AttributeError, TypeError):
        current = {}
    for entry in entries:
        notes = current.get(entry.name, entry.notes.zh if lang == "zh" else entry.notes.en)
        if any(mark in (notes or "") for mark in _TEMPLATE_TEXT):
            places.append(f"{entry.name}.yaml: notes.{lang}")
    if not places:
        return None
    if lang == "zh":
        return (f"提示：报告中还有 {len(places)} 处模板文字（“（在此写下……）”），请写上你自己的分析与体会："
                f"{'、'.join(places)}；改完后运行 labrunner report 重新生成报告")
    return (f"to do: {len(places)} places in the report still hold the template's text (\"(Write your ...)\"); "
            f"write your own words in {', '.join(places)}, then run `labrunner report`")


def _run_inventory(lab: Any, args: argparse.Namespace) -> int:
    import json

    from labrunner.run.inventory import run_inventory
    from labrunner.run.outcome import RunOptions

    if args.profile:
        raise UsageError("--profile does not go with --inventory: each inventory entry names its own profile",
                         hint="set `profile:` in the entries of lab.yaml's inventory (default: default_profile)")
    result = run_inventory(lab, RunOptions(
        scenarios=args.scenarios, failed_only=args.failed, pdf=not args.no_pdf, lang=args.lang,
    ), parallel=4 if args.parallel is None else args.parallel)
    overview = result.overview_dir / "overview.json"
    if args.json:
        doc = json.loads(overview.read_text("utf-8"))
        doc["overview"] = str(result.overview_dir)
        doc["interrupted"] = result.interrupted
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        width = max(len(s.name) for s in result.students)
        for s in result.students:
            if s.outcome is None:
                print(safe(f"{s.name:<{width}}  {s.target}  error: {s.error}"))
                continue
            o = s.outcome
            passed = sum(x.status == "passed" for x in o.outcomes)
            print(safe(f"{s.name:<{width}}  {s.target}  {passed}/{len(o.outcomes)} passed  "
                       f"{o.report_pdf or o.report_html or o.report_error or ''}"))
        print(f"overview: {result.overview_dir / 'overview.html'}")
    if result.interrupted:
        return ExitStatus.INTERRUPTED
    return ExitStatus.OK if result.ok else ExitStatus.FAILED


def _print_summary(rows: list[dict]) -> None:
    if not rows:
        print("no scenario was run")
        return
    width = max(len(r["scenario"]) for r in rows)
    print(f"{'scenario':<{width}}  {'result':<11} {'time':>7} {'frames':>7}")
    for r in rows:
        frames = "-" if r["frames"] is None else str(r["frames"])
        print(safe(f"{r['scenario']:<{width}}  {r['status']:<11} {r['duration']:>6.1f}s {frames:>7}"))
        if r["error"]:
            print(f"{'':<{width}}  └ {safe(r['error'])}")  # the error may quote a server's reply


# --- report -------------------------------------------------------------------


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="render report.html and report.pdf again from a finished run (offline)",
        description="Render the report from a run folder's files only: no host, no network.",
    )
    _common(p)
    p.add_argument("run", nargs="?", metavar="RUN",
                   help="a run id or run folder (default: output/latest, the newest run)")
    p.add_argument("--lang", choices=["zh", "en"],
                   help="language of the report (default: the run's); the other language is written beside it, "
                        "as report.en.html/report.en.pdf")
    p.add_argument("--templates", metavar="DIR",
                   help="a folder of templates that override the built-in ones (default: report.templates)")
    p.add_argument("--no-pdf", action="store_true", help="write report.html only")
    p.add_argument("--allow-mixed", action="store_true",
                   help="render a report whose sections come from different profiles, targets or sandbox instances "
                        "(refused by default; each section says which run and profile produced it)")
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labrunner.report import render_report
    from labrunner.runfolder import MANIFEST, resolve_run

    run_dir: Path | None = None
    # The templates come from this project (--templates, else lab.yaml's report.templates),
    # never from the run folder: a folder someone handed in is data, not code.
    templates = args.templates
    lab = None
    config = _config_path(args)
    if args.config or Path(config).is_file():  # lab.yaml may move the output folder
        from labrunner.config.load import load_lab

        lab = load_lab(config)
        templates = templates or lab.report.templates
    if args.run and (Path(args.run) / MANIFEST).is_file():
        run_dir = Path(args.run)
    else:
        run_dir = resolve_run(lab.output_dir if lab is not None else Path("output"), args.run)
    # the student's words as the project holds them now, redacted (report/words.py)
    redactor, words = _student_words(lab, run_dir)
    res = render_report(run_dir, pdf=not args.no_pdf, templates_dir=templates, lang=args.lang,
                        allow_mixed=args.allow_mixed, redact=redactor, words=words)
    print(f"report.html: {res['html']}")
    if res.get("pdf"):
        print(f"report.pdf:  {res['pdf']}")
    return ExitStatus.OK


def _student_words(lab: Any, run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The report's redactor and the student's words (report/words.py).

    A run of this project (its folder under lab.yaml's output folder): the words as its files
    say now (notes edited after the run), redacted with the account secret when it can be had
    as `run` has it (environment, sandbox state, a prompt on a terminal) and by shape. Any
    other folder (handed in): the manifest's copies, redacted again by shape.
    """
    from labrunner import runfolder
    from labrunner.config.load import inventory_profile, load_scenarios, resolve_profile
    from labrunner.report.words import from_manifest, project_words
    from labrunner.run.lab import known_secret
    from labrunner.secrets import Redactor

    redactor = Redactor()
    try:
        manifest = runfolder.read_json(run_dir / runfolder.MANIFEST)
    except (OSError, ValueError):
        manifest = None  # the render says what is wrong with it
    manifest = manifest if isinstance(manifest, dict) else {}
    real = run_dir.resolve()
    if lab is None or lab.output_dir.resolve() not in real.parents:
        return redactor, from_manifest(manifest, redactor)
    meta, profile = lab.report, None
    students = lab.output_dir.resolve() / "students"
    with contextlib.suppress(LabError):
        if real.parent.parent == students:  # a class run: output/students/<name>/<run>
            entry = next((e for e in lab.inventory if e.name == real.parent.name), None)
            if entry is not None:
                meta = entry.report  # the student's own cover data, whatever the profile does
                profile = inventory_profile(lab, entry)
        else:
            profile = resolve_profile(lab, str(manifest.get("profile") or "") or None)
    if profile is not None:
        def why() -> None:
            print("labrunner report: the password is asked only to redact it from your notes "
                  "(Enter: skip; notes are then redacted by shape only) / 只用于从笔记中隐去密码（回车跳过）",
                  file=sys.stderr, flush=True)

        redactor.add(known_secret(profile, before_prompt=why),
                     users={profile.account.login, profile.account.address})
    try:
        scenarios = load_scenarios(lab, None)  # a mistake in a file the student edited: said here
    except ConfigError:
        raise
    except UsageError:  # no scenario folder here: the manifest's words
        scenarios = []
    words = project_words(meta, scenarios, redactor)
    kept = from_manifest(manifest, redactor)
    _copy_note_images(lab, run_dir, manifest, scenarios, words, kept)
    # a scenario whose file is gone keeps the manifest's words
    words["scenarios"] = {**kept["scenarios"], **words["scenarios"]}
    return redactor, words


def _copy_note_images(lab: Any, run_dir: Path, manifest: dict[str, Any], scenarios: list[Any],
                      words: dict[str, Any], kept: dict[str, Any]) -> None:
    """The screenshots the current words show, copied into the run folder as a run copies them
    (report/images.py), and the words pointed there. An image that cannot be shown is a
    one-line error, unless the run folder already holds that text with its images (the original
    screenshot deleted after the run): then the run's copy (``kept``, the manifest's words) is
    used, and a line says so."""
    from labrunner.report.images import copy_images

    def copied(text: str, base: Path, dest: Path, where: str, fallback: Any) -> str:
        try:
            return copy_images(text, base, project, dest, where)
        except UsageError as err:
            if not isinstance(fallback, str):
                raise
            print(safe(f"labrunner: {err} — the run's copy of this text is used"), file=sys.stderr)
            return fallback

    project = lab.path.parent
    for key in ("reflections", "problems"):
        if isinstance(words.get(key), dict):
            previous = kept.get(key)
            was: dict[str, Any] = previous if isinstance(previous, dict) else {}
            words[key] = {lang: copied(text, project, run_dir, f"{lab.path.name}: report.{key}.{lang}", was.get(lang))
                          for lang, text in words[key].items()}
    entries = {e.get("name"): e for e in manifest.get("scenarios") or [] if isinstance(e, dict)}
    for sc in scenarios:
        entry, notes = entries.get(sc.name), words["scenarios"].get(sc.name, {}).get("notes")
        if entry is None or not isinstance(notes, dict):
            continue
        folder = run_dir.parent / entry["dir"] if isinstance(entry.get("dir"), str) else run_dir / sc.name
        if not folder.resolve().is_relative_to(run_dir.parent.resolve()):  # a hand-edited "dir"
            folder = run_dir / sc.name
        previous = kept["scenarios"].get(sc.name, {}).get("notes")
        had: dict[str, Any] = previous if isinstance(previous, dict) else {}
        words["scenarios"][sc.name]["notes"] = {
            lang: copied(text, sc.path.parent, folder, f"{sc.path.name}: notes.{lang}", had.get(lang))
            for lang, text in notes.items()}


# --- sandbox ------------------------------------------------------------------


def _add_sandbox(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sandbox", help="start, stop or inspect the built-in practice lab (network namespaces; root)",
        description="The sandbox lab: a target host `ecs` (OpenSSH) and a mail provider `mail` "
                    "(Postfix, Dovecot, nginx) in network namespaces on this machine.",
    )
    p.add_argument("action", choices=["up", "down", "status"],
                   help="up: start it, or keep it as it runs (--targets N with another N rebuilds it); "
                        "down: remove everything it made; status: what runs where")
    p.add_argument("--instance", metavar="NAME",
                   help="instance name, 1-8 of a-z0-9 (default: $LABRUNNER_SANDBOX_INSTANCE or `lab`)")
    p.add_argument("--targets", type=int, metavar="N",
                   help="up: N target hosts ecs, ecs2 ... ecsN, each with its own mail account student, "
                        "student2 ... (a class for --inventory; default: as many as run now, else 1)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (up: the state, secrets hidden)")
    p.set_defaults(handler=cmd_sandbox)


def cmd_sandbox(args: argparse.Namespace) -> int:
    import json

    from labrunner import sandbox

    if args.targets is not None and args.action != "up":
        raise UsageError(f"--targets goes with `sandbox up`, not `sandbox {args.action}`",
                         hint="`down` removes every target; `status` shows every target")
    if args.action == "up":
        quiet = (lambda _m: None) if args.json else print
        state = sandbox.up(args.instance, targets=args.targets, progress=quiet)
        if args.json:
            print(json.dumps(sandbox.public_state(state), indent=2))
    elif args.action == "down":
        sandbox.down(args.instance, progress=(lambda _m: None) if args.json else print)
    else:
        info = sandbox.status(args.instance)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(sandbox.format_status(info))
        return ExitStatus.OK if info["running"] and info.get("healthy") else ExitStatus.FAILED
    return ExitStatus.OK


# --- doctor -------------------------------------------------------------------


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="preflight: check everything a run needs, each problem with its fix",
        description="Check this machine (tshark, editcap, WeasyPrint, CJK fonts) and the target "
        "(SSH and its host key, tcpdump and the right to capture, DNS, every server port the "
        "scenarios use, one login to each mail service with the account's password and the "
        "server certificate checked against ca_file, clock).",
    )
    _common(p)
    p.add_argument("-p", "--profile", help="profile of lab.yaml to check (default: default_profile)")
    p.add_argument("--local", action="store_true", help="check this machine only")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from labrunner.doctor import run_doctor

    rows = run_doctor(_config_path(args), profile=args.profile, local_only=args.local)
    ok = all(r.ok for r in rows)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.to_dict() for r in rows]}, ensure_ascii=False, indent=2))
    else:
        for r in rows:
            print(safe(f"{'ok ' if r.ok else 'FAIL'} {r.where:<6} {r.name}: {r.detail}"))
            if not r.ok and r.fix:
                print(f"{'':12}fix: {safe(r.fix)}")
        failed = sum(not r.ok for r in rows)
        print("all checks passed" if ok else f"{failed} check(s) failed")
    return ExitStatus.OK if ok else ExitStatus.FAILED


# --- analyze ------------------------------------------------------------------


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="analyse a capture (pcap/pcapng) with tshark: dialogues, TLS, statistics",
        description="Annotated SMTP/POP3/IMAP/HTTPS dialogues, TLS handshakes and TCP statistics of "
        "any capture, frame numbers as Wireshark shows them (docs/analysis.md).",
    )
    p.add_argument("capture", help="a .pcap or .pcapng file (key log embedded or given with --keylog)")
    p.add_argument("--keylog", default=None, help="TLS key log file (SSLKEYLOGFILE format) to decrypt TLS")
    p.add_argument("--lang", choices=("zh", "en"), default="zh",
                   help="language of the explanations (default: zh, Chinese)")
    p.add_argument("--json", action="store_true", help="print the JSON document of docs/analysis.md")
    p.add_argument("--show-credentials", action="store_true",
                   help="do not redact passwords and AUTH data (never for a report you share)")
    p.set_defaults(handler=cmd_analyze, quick_exit=True)


def cmd_analyze(args: argparse.Namespace) -> int:
    import gc
    from pathlib import Path

    from labrunner.analysis import tshark

    # This process only analyses, then exits: no cyclic garbage worth collecting meanwhile (the
    # collector's passes over the growing document cost ~5 % of the analysis; the run's shared
    # process keeps it on).
    gc.disable()
    capture, keylog = Path(args.capture), Path(args.keylog) if args.keylog else None
    # tshark first: the analysis's imports (~0.1 s) then overlap its start-up (~0.17 s)
    started = None
    with contextlib.suppress(Exception):  # (analyze() meets the same problem and says it)
        started = tshark.start_first(capture, keylog)
    try:
        import json

        from labrunner.analysis import analyze
        from labrunner.analysis.text import render

        # --json: the streams (nearly all of the document) encoded while tshark reads and exits
        encoded: list[tuple[list[Any], str]] = []
        def streams_done(streams: list[Any], text: str) -> None:
            encoded.append((streams, text))

        doc = analyze(capture, keylog=keylog, lang=args.lang, show_credentials=args.show_credentials,
                      started=started, streams_done=streams_done if args.json else None)
    finally:
        if started is not None:
            started.close()
    if args.json:
        # One line of printable ASCII, for programs (jq shows it indented, with its Chinese): json's
        # C encoder takes no indent (the Python one it falls back to took 0.26 s of a 50 MB
        # capture's 1.1 s), and with every character from DEL up \u-escaped no C1 control, bidi
        # override or lone surrogate can act on a terminal (security review F10).
        if encoded and encoded[-1][0] is doc["streams"]:
            # spliced where a placeholder stands (first in the text: no key before "streams" can hold a NUL)
            placeholder = "\0labrunner: the streams\0"
            head, _, tail = json.dumps(dict(doc, streams=placeholder)).partition(json.dumps(placeholder))
            print(head + encoded[-1][1] + tail)
        else:
            print(json.dumps(doc))
    else:
        print(render(doc))
    return ExitStatus.OK


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check that a report says what its attached captures say (for the teacher)",
        description="Extract the sanitized captures, manifest and analyses report.pdf carries, analyse the "
        "captures again and compare: dialogues, TLS parameters, mail summaries, hashes (docs/evidence.md). "
        "Exit 0: everything matches; 1: something differs; 2: unusable input.",
    )
    p.add_argument("target", metavar="REPORT_OR_RUN", help="a report.pdf, or a run folder output/<run-id>")
    p.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labrunner.evidence.verify import verify

    res = verify(Path(args.target), progress=lambda line: print(line, file=sys.stderr))
    for line in res.checked:
        print(f"ok    {line}")
    for line in res.notes:
        print(f"note  {line}")
    for line in res.differences:
        print(f"DIFF  {line}")
    if res.ok:
        print(f"verify: {args.target}: everything the report shows matches its captures")
        return ExitStatus.OK
    print(f"verify: {args.target}: {len(res.differences)} difference(s) between the report and its evidence")
    return ExitStatus.FAILED


# --- main ---------------------------------------------------------------------

ADDERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_validate, _add_list, _add_run,
                                                               _add_report, _add_sandbox, _add_doctor,
                                                               _add_analyze, _add_verify]


# each command by its name (every adder is _add_NAME and adds the parser NAME)
COMMANDS = {add.__name__.removeprefix("_add_"): add for add in ADDERS}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` (a name in COMMANDS, the first word typed) only
    that command's parser under the top one: the same parse and --help for it, in a fraction
    of the time (``labrunner analyze`` starts tshark right after this)."""
    parser = argparse.ArgumentParser(
        prog="labrunner", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"labrunner {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (accepted anywhere on the line)")
    parser.add_argument("-c", "--config", dest="top_config", default=None, metavar="LAB_YAML",
                        help="the lab file, before or after the command (default: ./lab.yaml, or $LABRUNNER_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in [COMMANDS[command]] if command in COMMANDS else ADDERS:
        add(sub)
    from labrunner.cli_help import chinese_locale, localize_parser

    if chinese_locale():  # every option's help in Chinese (LANG=zh_CN.UTF-8)
        localize_parser(parser)
    return parser


def _print_error(err: LabError) -> None:
    if isinstance(err, ConfigError):
        for line in err.problems:
            print(safe(line), file=sys.stderr)
        if len(err.problems) > 1:
            print(f"{len(err.problems)} problems found; fix them and run `labrunner validate` again.",
                  file=sys.stderr)
    else:
        print(f"labrunner: error: {safe(err)}", file=sys.stderr)  # errors quote servers and files
    if err.hint:
        print(f"  hint: {safe(err.hint)}", file=sys.stderr)


def fork_children_plainly() -> None:
    """Start child processes with fork(), not vfork().

    tshark, editcap and the local tcpdump start in a session of their own, so that a Ctrl-C at
    the terminal (SIGINT to the whole process group) reaches labrunner only. With vfork(),
    CPython's child blocks every signal, sets all handlers to the default and unblocks them
    before it calls setsid(): a Ctrl-C in that window is still delivered to the child as a
    member of our group, and kills it ("editcap ... exit code -2" for a scenario already
    captured; a 1-in-3 chance per start in a loop that sends SIGINT, none with fork()).
    ``_USE_VFORK`` is CPython's own switch for this (3.10 and later); other Pythons lack it."""
    import subprocess

    if hasattr(subprocess, "_USE_VFORK"):
        subprocess._USE_VFORK = False


def _quick_exit(status: int) -> None:
    """End this process now, its output flushed, without freeing what it built: for a command
    that only prints (analyze), whose finished document is big (a 50 MB capture: ~25 ms of
    freeing objects at the interpreter's exit, a twentieth of tshark's own time). Only from the
    command line (main() with no argv): never in a process that goes on (tests call main(argv))."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    fork_children_plainly()
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words[0] if words else None)
    # --debug is accepted anywhere on the line, as users type it after the subcommand too
    debug = "--debug" in words
    args = parser.parse_args([w for w in words if w != "--debug"])
    args.debug = debug
    if not getattr(args, "handler", None):
        parser.print_help()
        return ExitStatus.USAGE
    handler: Handler = args.handler
    try:
        status = int(handler(args))
        if argv is None and getattr(args, "quick_exit", False):
            _quick_exit(status)
        return status
    except LabError as err:
        if args.debug:
            raise
        _print_error(err)
        return int(err.exit_status)
    except KeyboardInterrupt:
        print("labrunner: interrupted; finished results are kept", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.OK
    except Exception as exc:  # a bug: one line, traceback only with --debug
        if args.debug:
            raise
        print(f"labrunner: internal error: {type(exc).__name__}: {safe(exc)} "
              "(run the same command with --debug for the traceback, and report it)", file=sys.stderr)
        return ExitStatus.BUG
