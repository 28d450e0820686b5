"""The run folder's manifest.json as typed records: one writer (the runner), one reader (the report).

``Manifest.from_json`` is the one place that reads a manifest someone may have edited, damaged
or written with an older labrunner: a missing key takes its default (old folders), and a value
of the wrong type or shape is one ``ManifestError`` (exit 2) that names the field and says how
to fix it, never a traceback. ``to_json`` writes the shape below, which older readers know.

::

    {run_id, started, ended, profile, lang, origin?,
     report: {school, course, lab, student: {name, id, class}, date, show_credentials},
     objectives: {zh: [..], en: [..]}, reflections: TEXT, problems: TEXT,
     target: {label, hostname, os, kernel, addresses: [..], tools: {name: version}},
     local: {tools: {name: version}},
     scenarios: [{name, section, title: TEXT, objective: TEXT, notes: TEXT, status, error, hint,
                  run_id, dir, started, duration, frames, reused?, origin?, attempts?, imported?,
                  capture: {interface, filter, packets, partial, problem, settled} | null,
                  files: {NAME: {sha256, size}}}]}

TEXT is a string or ``{"zh": .., "en": ..}``. A scenario's ``dir`` is its folder relative to the
run folder (``telnet-smtp``); earlier labrunner versions wrote ``<run-id>/<name>``, relative to
the output folder (read only when it is this run's own folder). ``origin`` says which profile,
target and sandbox produced a result; ``attempts`` lists a scenario's runs when one failed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from labrunner.errors import UsageError
from labrunner.runfolder.layout import MANIFEST, RUN_ID_RE, SAFE_NAME_RE, write_json
from labrunner.text import Text as BilingualText

Status = Literal["passed", "failed", "interrupted", "skipped", "running"]
STATUSES: tuple[Status, ...] = get_args(Status)
LANGS = ("zh", "en")

T = TypeVar("T")


class ManifestError(UsageError):
    """A manifest.json that cannot be read as one: one line naming the file and the field."""


# --- reading JSON values with the field's name at hand ----------------------------------------


@dataclass(frozen=True)
class _Field:
    """A place in the manifest ("scenarios[2].capture.packets") and the file it is in."""

    path: str
    where: str = ""

    def __truediv__(self, key: str | int) -> _Field:
        if isinstance(key, int):
            return _Field(f"{self.path}[{key}]", self.where)
        return _Field(f"{self.path}.{key}" if self.path else key, self.where)

    def fail(self, problem: str) -> ManifestError:
        return ManifestError(f"{self.where}: {self.path or 'the top level'}: {problem}",
                             hint=f"fix {self.path or 'it'} in {MANIFEST} by hand (see the field's shape in "
                                  "labrunner/runfolder/records.py), or run the experiment again")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _obj(value: Any, at: _Field) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise at.fail(f"expected an object, got {_kind(value)}")
    return value


def _str(value: Any, at: _Field, default: str | None = None) -> str | None:
    if value is None:
        return default
    if not isinstance(value, str):
        raise at.fail(f"expected a string, got {_kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # "\ud800" in JSON: no character, the report cannot write it
        raise at.fail(f"holds {exc.object[exc.start]!r}, half of a UTF-16 pair, not a character") from None
    return value


def _number(value: Any) -> str:
    return _kind(value) if isinstance(value, bool) or not isinstance(value, int | float) else repr(value)[:24]


def _int(value: Any, at: _Field) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise at.fail(f"expected a whole number >= 0, got {_number(value)}")
    return value


def _float(value: Any, at: _Field) -> float | None:
    if value is None:
        return None
    # (an int too large for a float, or inf/nan, is no duration either)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9 \
            or not math.isfinite(value):
        raise at.fail(f"expected a number of seconds >= 0, got {_number(value)}")
    return float(value)


def _bool(value: Any, at: _Field) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise at.fail(f"expected true or false, got {_kind(value)}")
    return value


def _list(value: Any, at: _Field, item: Callable[[Any, _Field], T]) -> list[T]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise at.fail(f"expected a list, got {_kind(value)}")
    return [item(v, at / i) for i, v in enumerate(value)]


def _strings(d: dict[str, Any], at: _Field, names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: _str(d.get(name), at / name) for name in names}


def _text_item(value: Any, at: _Field) -> str:
    return _str(value, at) or ""


def _tools(value: Any, at: _Field) -> dict[str, str]:
    return {str(k): _text_item(v, at / str(k)) for k, v in _obj(value, at).items()}


# --- the records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Text(BilingualText):
    """A text in both languages, or one string for both (``plain``): labrunner's bilingual
    ``Text`` as the manifest stores it."""

    plain: bool = False

    @classmethod
    def of(cls, value: str | None) -> Text:
        return cls(value or "", value or "", plain=True)

    def pick(self, lang: str) -> str:
        """The text in ``lang``, else in the other language."""
        return self.get(lang)

    def __bool__(self) -> bool:
        return bool(self.zh or self.en)

    def to_json(self) -> str | dict[str, str]:
        return self.zh if self.plain else {"zh": self.zh, "en": self.en}

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> Text:
        if value is None or isinstance(value, str):
            return cls.of(_str(value, at))
        if not isinstance(value, dict):
            raise at.fail(f"expected a string or {{\"zh\": ..., \"en\": ...}}, got {_kind(value)}")
        return cls(zh=_str(value.get("zh"), at / "zh") or "", en=_str(value.get("en"), at / "en") or "")


@dataclass(frozen=True)
class FileEntry:
    """A file of a scenario's folder as the run recorded it."""

    sha256: str | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> FileEntry:
        d = _obj(value, at)
        digest = _str(d.get("sha256"), at / "sha256")
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise at.fail("sha256 is not 64 hexadecimal digits")
        return cls(sha256=digest, size=_int(d.get("size"), at / "size"))


@dataclass(frozen=True)
class CaptureInfo:
    """What the capture of a scenario recorded (capture.CaptureResult, as the report needs it)."""

    interface: str | None = None
    filter: str | None = None
    packets: int | None = None
    partial: bool = False
    problem: str | None = None
    settled: str | None = None  # how the end of the capture was decided (capture.Capture.settled)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> CaptureInfo | None:
        if value is None:
            return None
        d = _obj(value, at)
        if isinstance(d.get("settled"), bool):  # an imported capture's, as one version wrote it
            d = {**d, "settled": "imported" if d["settled"] else None}
        return cls(**_strings(d, at, ("interface", "filter", "problem", "settled")),
                   packets=_int(d.get("packets"), at / "packets"), partial=_bool(d.get("partial"), at / "partial"))


@dataclass(frozen=True)
class Imported:
    """A scenario made of the student's own capture (an ``import`` step): the file's name and hash."""

    capture: str | None = None
    sha256: str | None = None
    keylog: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> Imported | None:
        names = ("capture", "sha256", "keylog")
        return None if value is None else cls(**_strings(_obj(value, at), at, names))


@dataclass(frozen=True)
class Origin:
    """Which lab produced a result: the profile, the target host and (a sandbox profile) the
    sandbox instance and when it was built. A report refuses to mix labs unless asked."""

    profile: str | None = None
    target: str | None = None
    sandbox: str | None = None  # the sandbox instance
    built: str | None = None  # when that sandbox was built (`sandbox up`): said, not compared

    def conflicts(self, other: Origin) -> bool:
        """Whether two results came from different labs: another profile, target or sandbox
        instance (a field only one of them knows, as in a result an older labrunner wrote, is no
        conflict; a sandbox rebuilt since, after a reboot say, is the same lab)."""
        return any(a is not None and b is not None and a != b
                   for a, b in zip(self._key(), other._key(), strict=True))

    def _key(self) -> tuple[str | None, str | None, str | None]:
        return self.profile, self.target, self.sandbox

    def describe(self) -> str:
        parts = [f"profile {self.profile or '?'}"]
        if self.sandbox:
            parts.append(f"sandbox {self.sandbox}" + (f" built {self.built}" if self.built else ""))
        elif self.target:
            parts.append(f"target {self.target}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> Origin | None:
        names = ("profile", "target", "sandbox", "built")
        return None if value is None else cls(**_strings(_obj(value, at), at, names))


@dataclass(frozen=True)
class Attempt:
    """One earlier (or this) run of a scenario, for the report's problems and solutions: the
    runner records them, so a copied run folder does not need its neighbours to tell them."""

    run_id: str
    status: Status
    error: str | None = None
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "error": self.error, "hint": self.hint}

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> Attempt:
        d = _obj(value, at)
        return cls(run_id=_str(d.get("run_id"), at / "run_id") or "?", status=_status(d.get("status"), at / "status"),
                   error=_str(d.get("error"), at / "error"), hint=_str(d.get("hint"), at / "hint"))


def _status(value: Any, at: _Field) -> Status:
    status = _str(value, at) or "running"
    if status not in STATUSES:
        raise at.fail(f"{status[:40]!r} is not one of {', '.join(STATUSES)}")
    return cast(Status, status)


def _file_name(name: str, at: _Field) -> str:
    # a file of the scenario's own folder: never a path (F13: "/etc/shadow", "../x")
    if not SAFE_NAME_RE.match(name) or ".." in name:
        raise at.fail(f"{name[:80]!r} is not the name of a file in the scenario's folder")
    return name


def _dir(value: Any, at: _Field, name: str) -> str:
    """A scenario's folder: ``NAME`` (relative to the run folder) or, as earlier versions wrote it,
    ``RUN-ID/NAME`` (relative to the output folder). Nothing else: no absolute path, no ``..``."""
    text = _str(value, at)
    if text is None:
        return name
    parts = text.split("/")
    ok = (len(parts) == 1 and SAFE_NAME_RE.match(parts[0]) and ".." not in parts[0]) or \
        (len(parts) == 2 and RUN_ID_RE.match(parts[0]) and SAFE_NAME_RE.match(parts[1]) and ".." not in parts[1])
    if not ok:
        raise at.fail(f"{text[:80]!r} is not a scenario folder inside the run folder "
                      "(a name like 'telnet-smtp', no '/' at the start, no '..')")
    return text


@dataclass
class ScenarioEntry:
    """One scenario's result in a run (its own, or one carried over from an earlier run)."""

    name: str
    run_id: str = ""
    dir: str = ""  # relative to the run folder (see the module's docstring)
    section: str | None = None
    title: Text = field(default_factory=Text)
    objective: Text = field(default_factory=Text)
    notes: Text = field(default_factory=Text)
    status: Status = "running"
    error: str | None = None
    hint: str | None = None
    started: str | None = None
    duration: float | None = None
    frames: int | None = None
    capture: CaptureInfo | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    reused: bool = False
    origin: Origin | None = None
    attempts: list[Attempt] = field(default_factory=list)  # only when one of them failed
    imported: Imported | None = None  # the student's own capture, not a run's

    def __post_init__(self) -> None:
        self.dir = self.dir or self.name

    def folder(self, run_dir: Path) -> tuple[Path, str | None]:
        """(the scenario's folder, None), or (the folder, why it is not used) when the manifest
        points outside the run folder (an older labrunner's carried-over result, a hand edit)."""
        run_dir = Path(run_dir)
        parts = self.dir.split("/")
        if len(parts) == 2:  # RUN-ID/NAME, written by earlier versions: relative to the output folder
            if parts[0] not in (run_dir.name, run_dir.resolve().name):
                return run_dir.parent / self.dir, f"outside this run folder ({self.dir})"
            parts = parts[1:]
        path = run_dir / parts[0]
        if path.exists() and not path.resolve().is_relative_to(run_dir.resolve()):
            return path, f"a link to a folder outside this run folder ({self.dir})"
        return path, None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "section": self.section, "title": self.title.to_json(),
            "objective": self.objective.to_json(), "notes": self.notes.to_json(), "status": self.status,
            "error": self.error, "hint": self.hint, "run_id": self.run_id, "dir": self.dir,
            "started": self.started, "duration": self.duration, "frames": self.frames,
            "capture": self.capture.to_json() if self.capture else None,
            "files": {k: v.to_json() for k, v in dict(self.files).items()},
        }
        if self.reused:
            out["reused"] = True
        if self.origin is not None:
            out["origin"] = self.origin.to_json()
        if self.attempts:
            out["attempts"] = [a.to_json() for a in self.attempts]
        if self.imported is not None:
            out["imported"] = self.imported.to_json()
        return out

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> ScenarioEntry:
        d = _obj(value, at)
        name = _str(d.get("name"), at / "name")
        if not name or not SAFE_NAME_RE.match(name) or ".." in name:
            raise at.fail(f"the scenario has no usable name ({name!r})" if name else "the scenario has no name")
        files = _obj(d.get("files"), at / "files")
        return cls(
            name=name, run_id=_str(d.get("run_id"), at / "run_id") or "", dir=_dir(d.get("dir"), at / "dir", name),
            section=_str(d.get("section"), at / "section"), title=Text.from_json(d.get("title"), at / "title"),
            objective=Text.from_json(d.get("objective"), at / "objective"),
            notes=Text.from_json(d.get("notes"), at / "notes"), status=_status(d.get("status"), at / "status"),
            error=_str(d.get("error"), at / "error"), hint=_str(d.get("hint"), at / "hint"),
            started=_str(d.get("started"), at / "started"), duration=_float(d.get("duration"), at / "duration"),
            frames=_int(d.get("frames"), at / "frames"),
            capture=CaptureInfo.from_json(d.get("capture"), at / "capture"),
            files={_file_name(str(k), at / "files"): FileEntry.from_json(v, at / "files" / str(k))
                   for k, v in files.items()},
            reused=_bool(d.get("reused"), at / "reused"), origin=Origin.from_json(d.get("origin"), at / "origin"),
            attempts=_list(d.get("attempts"), at / "attempts", Attempt.from_json),
            imported=Imported.from_json(d.get("imported"), at / "imported"),
        )


@dataclass(frozen=True)
class StudentInfo:
    name: Text = field(default_factory=Text)
    id: Text = field(default_factory=Text)
    klass: Text = field(default_factory=Text)  # "class" in JSON


@dataclass(frozen=True)
class ReportInfo:
    """The cover of the report, as lab.yaml said at the time of the run."""

    school: Text = field(default_factory=Text)
    course: Text = field(default_factory=Text)
    lab: Text = field(default_factory=Text)
    student: StudentInfo = field(default_factory=StudentInfo)
    date: str | None = None
    show_credentials: bool = False

    def to_json(self) -> dict[str, Any]:
        s = self.student
        return {"school": self.school.to_json(), "course": self.course.to_json(), "lab": self.lab.to_json(),
                "student": {"name": s.name.to_json(), "id": s.id.to_json(), "class": s.klass.to_json()},
                "date": self.date, "show_credentials": self.show_credentials}

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> ReportInfo:
        d = _obj(value, at)
        st, sat = _obj(d.get("student"), at / "student"), at / "student"
        # "templates" (written by earlier versions) is ignored: a run folder never names code to run (F3)
        return cls(school=Text.from_json(d.get("school"), at / "school"),
                   course=Text.from_json(d.get("course"), at / "course"), lab=Text.from_json(d.get("lab"), at / "lab"),
                   student=StudentInfo(name=Text.from_json(st.get("name"), sat / "name"),
                                       id=Text.from_json(st.get("id"), sat / "id"),
                                       klass=Text.from_json(st.get("class"), sat / "class")),
                   date=_str(d.get("date"), at / "date"),
                   show_credentials=_bool(d.get("show_credentials"), at / "show_credentials"))


@dataclass(frozen=True)
class TargetInfo:
    """The target host as the run found it (report section 2); empty when it was not asked."""

    label: str | None = None
    hostname: str | None = None
    os: str | None = None
    kernel: str | None = None
    addresses: tuple[str, ...] = ()
    tools: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any((self.label, self.hostname, self.os, self.kernel, self.addresses, self.tools))

    def to_json(self) -> dict[str, Any]:
        if not self:
            return {}
        out: dict[str, Any] = {"label": self.label, "addresses": list(self.addresses), "tools": dict(self.tools)}
        out.update({k: v for k, v in (("os", self.os), ("kernel", self.kernel), ("hostname", self.hostname))
                    if v is not None})
        return out

    @classmethod
    def from_json(cls, value: Any, at: _Field) -> TargetInfo:
        d = _obj(value, at)
        return cls(label=_str(d.get("label"), at / "label"), hostname=_str(d.get("hostname"), at / "hostname"),
                   os=_str(d.get("os"), at / "os"), kernel=_str(d.get("kernel"), at / "kernel"),
                   addresses=tuple(_list(d.get("addresses"), at / "addresses", _text_item)),
                   tools=_tools(d.get("tools"), at / "tools"))


@dataclass
class Manifest:
    """A run folder's manifest.json."""

    run_id: str = ""
    started: str | None = None
    ended: str | None = None
    profile: str | None = None
    lang: str | None = None
    report: ReportInfo = field(default_factory=ReportInfo)
    objectives: dict[str, list[str]] = field(default_factory=lambda: {lang: [] for lang in LANGS})
    reflections: Text = field(default_factory=Text)
    problems: Text = field(default_factory=Text)  # section 5.1, the student's own words
    target: TargetInfo = field(default_factory=TargetInfo)
    local_tools: dict[str, str] = field(default_factory=dict)
    scenarios: list[ScenarioEntry] = field(default_factory=list)
    origin: Origin | None = None
    interrupted: bool = False  # Ctrl-C stopped the run (run/interrupts.py); its statuses say where

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id, "started": self.started, "ended": self.ended, "profile": self.profile,
            "lang": self.lang, "report": self.report.to_json(),
            "objectives": {k: list(v) for k, v in self.objectives.items()},
            "reflections": self.reflections.to_json(), "problems": self.problems.to_json(),
            "target": self.target.to_json(),
            "local": {"tools": dict(self.local_tools)},
            "scenarios": [e.to_json() for e in list(self.scenarios)],
        }
        if self.origin is not None:
            out["origin"] = self.origin.to_json()
        out["interrupted"] = self.interrupted
        return out

    @classmethod
    def from_json(cls, value: Any, where: str | Path = MANIFEST) -> Manifest:
        """The manifest in ``value`` (parsed JSON); ``where`` names the file in errors."""
        at = _Field("", str(where))
        if not isinstance(value, dict):
            raise at.fail(f"expected an object, got {_kind(value)}")
        d = value
        objectives = _obj(d.get("objectives"), at / "objectives")
        run_id = _str(d.get("run_id"), at / "run_id") or ""
        if run_id and not RUN_ID_RE.match(run_id):
            raise (at / "run_id").fail(f"{run_id[:40]!r} is not a run id like 20261126-141500")
        return cls(
            run_id=run_id, started=_str(d.get("started"), at / "started"), ended=_str(d.get("ended"), at / "ended"),
            profile=_str(d.get("profile"), at / "profile"), lang=_str(d.get("lang"), at / "lang"),
            report=ReportInfo.from_json(d.get("report"), at / "report"),
            objectives={lang: _list(objectives.get(lang), at / "objectives" / lang, _text_item) for lang in LANGS},
            reflections=Text.from_json(d.get("reflections"), at / "reflections"),
            problems=Text.from_json(d.get("problems"), at / "problems"),
            target=TargetInfo.from_json(d.get("target"), at / "target"),
            local_tools=_tools(_obj(d.get("local"), at / "local").get("tools"), at / "local" / "tools"),
            scenarios=_list(d.get("scenarios"), at / "scenarios", ScenarioEntry.from_json),
            origin=Origin.from_json(d.get("origin"), at / "origin"),
            interrupted=d.get("interrupted") is True,
        )

    @classmethod
    def read(cls, run_dir: Path) -> Manifest:
        """``run_dir/manifest.json``; UsageError (exit 2) when it is missing or damaged."""
        path = Path(run_dir) / MANIFEST
        if path.exists() and not path.is_file():  # a FIFO would block for ever
            raise ManifestError(f"{path} is not a file", hint="give a run folder that labrunner wrote")
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise UsageError(f"{run_dir} is not a run folder: it has no {MANIFEST}",
                             hint="give a run id or folder from `ls output/`") from None
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read {path}: {exc}",
                                hint="the run did not finish writing it, or it was edited: run the experiment "
                                     "again, or fix the JSON by hand") from None
        except RecursionError:
            raise ManifestError(f"cannot read {path}: nested too deeply",
                                hint="run the experiment again") from None
        return cls.from_json(data, path)

    def entry(self, name: str) -> ScenarioEntry | None:
        return next((e for e in self.scenarios if e.name == name), None)

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/manifest.json`` (atomically; see layout.atomic_file)."""
        write_json(Path(run_dir) / MANIFEST, self.to_json())
