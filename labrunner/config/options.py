"""Option objects: each declares one key's type, default, allowed values and help text.

The idea is MkDocs' (``mkdocs/config/config_options.py``, where the Config class *is* the
schema): each key is declared once, as the option in its model dataclass field's metadata
(``host: str = opt(Str(help=...))`` in ``config/model.py``), and :meth:`Section.from_dataclass`
makes the checking :class:`Section` of a dataclass from those fields. Checking a value walks the
YAML with its marks, records every problem with its key path and position instead of stopping
at the first, and builds the frozen model dataclass only when the part is clean. The same
declarations produce the option tables in ``docs/configuration.md`` (see :func:`describe`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from labrunner.config.yaml import Mark, MarkedList, MarkedMap, source_text
from labrunner.text import Text

KeyPath = tuple[str | int, ...]


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __bool__(self) -> bool:
        return False


REQUIRED: Any = _Sentinel("REQUIRED")
INVALID: Any = _Sentinel("INVALID")  # returned after a problem was recorded


_PLAIN_KEY = re.compile(r"[^\s.\[\]\"':]+\Z")


def format_path(path: KeyPath) -> str:
    """``steps[2].smtp.security``: keys joined by dots, list items 1-based in brackets.

    A key that is not a plain word (spaces, dots, newlines) is shown quoted in brackets so the
    path stays one unambiguous token.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif _PLAIN_KEY.match(str(part)) and str(part).isprintable():
            out += ("." if out else "") + str(part)
        else:
            out += "[" + json.dumps(str(part), ensure_ascii=False) + "]"
    return out or "(top level)"


def one_line(text: str) -> str:
    """The text with line breaks and other control characters escaped: a problem is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def display_path(path: Path) -> str:
    """The path relative to the current directory when it is below it, else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


@dataclass(frozen=True)
class Problem:
    file: str
    mark: Mark
    path: str
    message: str

    def __str__(self) -> str:
        return (f"{one_line(self.file)}:{self.mark.line}:{self.mark.column}: "
                f"{one_line(self.path)}: {one_line(self.message)}")


@dataclass
class Ctx:
    """What a check needs besides the value: where it is, and where problems go."""

    file: Path
    problems: list[Problem] = field(default_factory=list)
    base_dir: Path = Path(".")  # relative paths in the file are relative to this
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the known server names

    def add(self, mark: Mark, path: KeyPath, message: str) -> Any:
        self.problems.append(Problem(display_path(self.file), mark, format_path(path), message))
        return INVALID


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def describe_value(value: Any) -> str:
    """How a wrong value is named in a message: its YAML type, not its Python one."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a true/false value ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({source_text(value)})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, MarkedMap):
        return "a mapping"
    if isinstance(value, MarkedList):
        return "a list"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"a date ({value.isoformat()})"
    return type(value).__name__


class Option:
    """One key of a mapping. Subclasses implement :meth:`validate`."""

    type_name = "value"

    def __init__(self, default: Any = REQUIRED, help: str = "", *, attr: str | None = None) -> None:
        self.default = default
        self.help = help
        self.attr = attr  # the dataclass field, when it differs from the YAML key

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def but(self, **changes: Any) -> Any:
        """A copy with another default (or help, check, ...), for a key used in two places."""
        other = copy.copy(self)
        for name, value in changes.items():
            if not hasattr(other, name) and name not in type(other).__dict__:
                raise TypeError(f"{type(self).__name__} has no {name!r}")
            setattr(other, name, value)
        return other

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        raise NotImplementedError

    def wrong_type(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        return ctx.add(mark, path, f"expected {self.type_name}, got {describe_value(value)}")

    def default_text(self) -> str:
        """The default as the documentation shows it."""
        if self.required:
            return "required"
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, tuple):
            return "[" + ", ".join(str(d) for d in self.default) + "]"
        return f"`{self.default}`" if self.default != "" else '`""`'


class Str(Option):
    type_name = "a string"

    def __init__(self, default: Any = REQUIRED, help: str = "", *, attr: str | None = None,
                 numbers: bool = False, nonempty: bool = False,
                 check: Callable[[str], str | None] | None = None) -> None:
        super().__init__(default, help, attr=attr)
        self.numbers = numbers  # accept 2020123456 or 4.2 where a student would not quote it
        self.nonempty = nonempty
        self.check = check  # returns a message when the string is not acceptable

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if self.numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = source_text(value)
        if self.numbers and isinstance(value, (datetime.date, datetime.datetime)):
            value = value.isoformat()
        if not isinstance(value, str):
            return self.wrong_type(value, mark, path, ctx)
        if self.nonempty and not value.strip():
            return ctx.add(mark, path, "must not be empty")
        if self.check is not None:
            message = self.check(value)
            if message:
                return ctx.add(mark, path, message)
        return value


class PathStr(Str):
    """A file or folder, relative to the file it is written in; ``~`` is the home folder."""

    type_name = "a path"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        value = super().validate(value, mark, path, ctx)
        if value is INVALID:
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else ctx.base_dir / p)


class Int(Option):
    type_name = "a whole number"

    def __init__(self, default: Any = REQUIRED, help: str = "", *, attr: str | None = None,
                 min: int | None = None, max: int | None = None) -> None:
        super().__init__(default, help, attr=attr)
        self.min = min
        self.max = max

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return self.wrong_type(value, mark, path, ctx)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            return ctx.add(mark, path, f"{source_text(value)} is out of range: {self._range()}")
        return int(value)

    def _range(self) -> str:
        if self.min is not None and self.max is not None:
            return f"allowed {self.min} to {self.max}"
        return f"at least {self.min}" if self.min is not None else f"at most {self.max}"


class Port(Int):
    type_name = "a port number (1-65535)"

    def __init__(self, default: Any = None, help: str = "", *, attr: str | None = None) -> None:
        super().__init__(default, help, attr=attr, min=1, max=65535)


class Float(Option):
    type_name = "a number"

    def __init__(self, default: Any = REQUIRED, help: str = "", *, attr: str | None = None,
                 positive: bool = True) -> None:
        super().__init__(default, help, attr=attr)
        self.positive = positive

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.wrong_type(value, mark, path, ctx)
        if self.positive and not value > 0:
            return ctx.add(mark, path, f"{value} must be greater than 0")
        return float(value)


class Bool(Option):
    type_name = "true or false"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if not isinstance(value, bool):
            return self.wrong_type(value, mark, path, ctx)
        return value


class Choice(Option):
    """One of a fixed set of words; numbers are compared as written (``1.2`` → "1.2")."""

    def __init__(self, choices: Iterable[str], default: Any = REQUIRED, help: str = "", *,
                 attr: str | None = None) -> None:
        super().__init__(default, help, attr=attr)
        self.choices = tuple(choices)

    @property
    def type_name(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = source_text(value)
        if not isinstance(value, str):
            return self.wrong_type(value, mark, path, ctx)
        if value not in self.choices:
            return ctx.add(mark, path, f"{value!r} is not one of: {', '.join(self.choices)}"
                           + did_you_mean(value, self.choices))
        return value


class ListOf(Option):
    """A list of items; a single item may be written without the list brackets."""

    def __init__(self, item: Option, default: Any = (), help: str = "", *, attr: str | None = None,
                 single: bool = True, nonempty: bool = False) -> None:
        super().__init__(default, help, attr=attr)
        self.item = item
        self.single = single
        self.nonempty = nonempty

    @property
    def type_name(self) -> str:  # type: ignore[override]
        return f"a list, each {self.item.type_name}"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if not isinstance(value, MarkedList):
            if self.single and value is not None and not isinstance(value, MarkedMap):
                item = self.item.validate(value, mark, path, ctx)
                return INVALID if item is INVALID else (item,)
            return self.wrong_type(value, mark, path, ctx)
        if self.nonempty and not value:
            return ctx.add(mark, path, "must not be empty")
        items = [self.item.validate(v, value.item_mark(i), (*path, i), ctx) for i, v in enumerate(value)]
        return INVALID if any(i is INVALID for i in items) else tuple(items)


class MapOf(Option):
    """A mapping from names the user chooses (profiles, servers) to values of one kind."""

    def __init__(self, item: Option, default: Any = REQUIRED, help: str = "", *,
                 attr: str | None = None, nonempty: bool = True) -> None:
        super().__init__(default, help, attr=attr)
        self.item = item
        self.nonempty = nonempty

    @property
    def type_name(self) -> str:  # type: ignore[override]
        return f"a mapping: name → {self.item.type_name}"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if not isinstance(value, MarkedMap):
            return self.wrong_type(value, mark, path, ctx)
        if self.nonempty and not value:
            return ctx.add(mark, path, "must name at least one entry")
        out: dict[str, Any] = {}
        bad = False
        for key, item in value.items():
            if not isinstance(key, str):
                ctx.add(value.key_mark(key), (*path, str(key)), "a name must be a string")
                bad = True
                continue
            result = self.item.validate(item, value.value_mark(key), (*path, key), ctx)
            bad = bad or result is INVALID
            out[key] = result
        return INVALID if bad else out


Builder = Callable[[dict[str, Any]], Any]
PostCheck = Callable[[dict[str, Any], MarkedMap, KeyPath, Ctx], None]
Check = Callable[[str], "str | None"]  # a string's problem, or None


class Section(Option):
    """A mapping with a fixed set of keys, built into one model dataclass.

    ``build`` receives the checked values by field name, defaults filled in (``partial``:
    only the keys the user wrote). ``post`` runs cross-key checks and records problems with
    ``ctx.add``; it sees INVALID for a key that already has a problem, and the raw mapping.
    """

    type_name = "a mapping"

    def __init__(self, name: str, fields: Mapping[str, Option], build: Builder, *,
                 default: Any = REQUIRED, help: str = "", attr: str | None = None,
                 post: PostCheck | None = None, partial: bool = False, empty_ok: bool = False,
                 shorthand: Option | None = None) -> None:
        super().__init__(default, help, attr=attr)
        self.name = name  # the heading in the documentation
        self.fields = dict(fields)
        self.build = build
        self.post = post
        self.partial = partial
        self.empty_ok = empty_ok  # `- pop3:` with nothing after it means all defaults
        self.shorthand = shorthand  # accepted instead of the mapping (e.g. a plain string)

    @classmethod
    def from_dataclass(cls, model: type, name: str, *, build: Builder | None = None,
                       sections: Mapping[str, Option] | None = None,
                       checks: Mapping[str, Check] | None = None, **kwargs: Any) -> Section:
        """The section of ``model``'s fields declared with :func:`opt` or :func:`sub`, in field order.

        The key, default, type and help of each come from the field (declared once, in
        config/model.py); the schema adds only what is its own: ``sections`` (the section of each
        :func:`sub` field, with its own checks), ``checks`` (a string check for a key, or for each
        item of a list), ``post`` (cross-key checks) and the docs heading ``name``. ``build``
        (default: the dataclass itself) receives the checked values by field name.
        """
        sections, checks = dict(sections or {}), dict(checks or {})
        fields: dict[str, Option] = {}
        for f in dataclasses.fields(model):
            if FIELD_OPTION in f.metadata:
                option: Option = f.metadata[FIELD_OPTION]
            elif FIELD_SECTION in f.metadata:
                section = sections.pop(f.name) if f.name in sections else None
                if section is None:
                    raise TypeError(f"{model.__name__}.{f.name}: give its Section in sections=")
                option = section.but(default=f.metadata[FIELD_SECTION].written(f), help=f.metadata[FIELD_SECTION].help)
            else:
                continue  # not a key of the file (set by the loader, e.g. Scenario.path)
            key = f.metadata.get(FIELD_KEY, f.name)
            if key != f.name:
                option = option.but(attr=f.name)
            if key in checks:
                option = _with_check(option, checks.pop(key))
            fields[key] = option
        if sections or checks:
            raise TypeError(f"{model.__name__} has no field declared for {sorted({*sections, *checks})}")
        return cls(name, fields, build or (lambda v: model(**v)), **kwargs)

    def make(self, **given: Any) -> Any:
        """The model built from ``given`` (by field name) and the declared defaults of the other keys.

        What a file writing only those keys gets, for a model made from other data (a sandbox
        target from the sandbox state): the same defaults as lab.yaml's, from the same declaration.
        """
        values: dict[str, Any] = {}
        for key, option in self.fields.items():
            attr = option.attr or key
            values[attr] = given.pop(attr) if attr in given else option.default
            if values[attr] is REQUIRED:
                raise TypeError(f"{self.name}: {key} is required")
        if given:
            raise TypeError(f"{self.name} has no key {sorted(given)}")
        return self.build(values)

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if value is None and self.empty_ok:
            value = MarkedMap()
            value.mark, value.key_marks, value.value_marks = mark, {}, {}
        if not isinstance(value, MarkedMap):
            if self.shorthand is not None and not isinstance(value, MarkedList):
                return self.shorthand.validate(value, mark, path, ctx)
            return self.wrong_type(value, mark, path, ctx)
        values: dict[str, Any] = {}
        bad = False
        for key in value:
            if key not in self.fields:
                name = key if isinstance(key, str) else str(key)
                ctx.add(value.key_mark(key), (*path, name),
                        "unknown key" + did_you_mean(name, self.fields)
                        + f"; allowed: {', '.join(self.fields)}")
                bad = True
        for key, option in self.fields.items():
            attr = option.attr or key
            if key in value:
                result = option.validate(value[key], value.value_mark(key), (*path, key), ctx)
                bad = bad or result is INVALID
                values[attr] = result
            elif option.required:
                ctx.add(value.mark, (*path, key), f"missing required key ({option.help or option.type_name})")
                values[attr] = INVALID
                bad = True
            elif not self.partial:
                values[attr] = option.default
        # Cross-key checks run even when a key was wrong, so one pass finds every problem; a
        # check skips the values that are INVALID.
        if self.post is not None:
            before = len(ctx.problems)
            self.post(values, value, path, ctx)
            bad = bad or len(ctx.problems) > before
        return INVALID if bad else self.build(values)


FIELD_OPTION = "labrunner.option"  # dataclass field metadata: the Option declaring the key
FIELD_SECTION = "labrunner.section"  # ... or: the key is a mapping of its own (a Section)
FIELD_KEY = "labrunner.key"  # the key in the file, when it is not the field's name


def _with_check(option: Option, check: Check) -> Option:
    """``option`` (a string, or a list of strings) with the schema's string check added."""
    if isinstance(option, ListOf):
        return option.but(item=_with_check(option.item, check))
    if not isinstance(option, Str) or option.check is not None:
        raise TypeError(f"a check goes on a string option without one, not on {option!r}")
    return option.but(check=check)


def opt(option: Option, *, key: str | None = None) -> Any:
    """A model dataclass field declared by its option: the key's default, type and help, once.

    The field's default is the option's (none when the key is required); ``key``: the key in
    the file when it is not the field's name (``class`` for ``klass``).
    """
    metadata: dict[str, Any] = {FIELD_OPTION: option}
    if key is not None:
        metadata[FIELD_KEY] = key
    if option.required:
        return field(metadata=metadata)
    default = option.default
    if isinstance(default, (dict, list, set)):  # mutable: a new one for each instance
        return field(default_factory=lambda: copy.copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class _Sub:
    help: str
    when_absent: Any  # the value when the key is not written; MISSING: the field's default

    def written(self, f: dataclasses.Field[Any]) -> Any:
        if self.when_absent is not MISSING:
            return self.when_absent
        if f.default is not MISSING:
            return f.default
        if f.default_factory is not MISSING:
            return f.default_factory()  # type: ignore[operator]
        return REQUIRED


def sub(help: str, *, default: Any = MISSING, default_factory: Any = MISSING, when_absent: Any = MISSING,
        key: str | None = None) -> Any:
    """A model dataclass field that is a mapping of its own, checked by the Section the schema gives.

    Without the key in the file its value is the field's default (``when_absent``: another
    value the loader completes, e.g. None for a profile's target that the sandbox fills in).
    """
    metadata: dict[str, Any] = {FIELD_SECTION: _Sub(help, when_absent)}
    if key is not None:
        metadata[FIELD_KEY] = key
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    if default is not MISSING:
        return field(default=default, metadata=metadata)
    return field(metadata=metadata)


class OneOf(Option):
    """A one-key mapping whose key names the kind: ``- smtp: {...}`` (a step)."""

    type_name = "a one-key mapping naming its kind"

    def __init__(self, kinds: Mapping[str, Section], default: Any = REQUIRED, help: str = "") -> None:
        super().__init__(default, help)
        self.kinds = dict(kinds)

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        kinds = ", ".join(self.kinds)
        if isinstance(value, str) and value in self.kinds:  # `- pop3` alone: all defaults
            return self.kinds[value].validate(None, mark, (*path, value), ctx)
        if not isinstance(value, MarkedMap) or len(value) != 1:
            got = f"a mapping with {len(value)} keys" if isinstance(value, MarkedMap) else describe_value(value)
            hint = did_you_mean(value, self.kinds) if isinstance(value, str) else ""
            return ctx.add(mark, path, f"expected one of {kinds} as the only key, got {got}{hint}"
                           + ("; indent the step's options under its kind" if isinstance(value, MarkedMap)
                              and len(value) > 1 else ""))
        ((kind, body),) = value.items()
        if kind not in self.kinds:
            return ctx.add(value.key_mark(kind), (*path, str(kind)),
                           f"unknown step kind; allowed: {kinds}" + did_you_mean(str(kind), self.kinds))
        return self.kinds[kind].validate(body, value.value_mark(kind), (*path, kind), ctx)


def describe(section: Section, heading: str = "###") -> str:
    """The option table of one section, for docs/configuration.md."""
    lines = [f"{heading} {section.name}", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, option in section.fields.items():
        type_name = option.type_name
        if isinstance(option, Section):
            type_name = f"mapping: see *{option.name}*"
        elif isinstance(option, ListOf) and isinstance(option.item, OneOf):
            type_name = "list, each item one of: " + ", ".join(f"*{s.name}*" for s in option.item.kinds.values())
        elif isinstance(option, (ListOf, MapOf)) and isinstance(option.item, Section):
            type_name = (f"list of *{option.item.name}*" if isinstance(option, ListOf)
                         else f"mapping: name → *{option.item.name}*")
        elif isinstance(option, OneOf):
            type_name = "one of: " + ", ".join(f"*{s.name}*" for s in option.kinds.values())
        default = option.default_text() if not isinstance(option, Section) or option.required else "—"
        help_text = option.help.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{key}` | {type_name} | {default} | {help_text} |")
    return "\n".join(lines) + "\n"


# --- the option kinds of labrunner's own values -----------------------------------------------


# config/model.py declares its fields with these, so they import its value types when used
# (model.py imports this module; its SecretRef is defined before any field). Text is labrunner's
# ground-floor type (labrunner/text.py), imported at the top.


class TextOpt(Option):
    """A text in both languages: a plain string (the same for both) or ``{zh: ..., en: ...}``."""

    type_name = "a string or {zh, en}"

    def __init__(self, default: Any = None, help: str = "", *, attr: str | None = None,
                 nonempty: bool = False) -> None:
        super().__init__(Text() if default is None else default, help, attr=attr)
        self.nonempty = nonempty
        self.section = Section("text", {
            "zh": Str("", "Chinese text (中文)"),
            "en": Str("", "English text"),
        }, lambda v: Text(**v))

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, str):
            text = Text(zh=value, en=value)
        elif isinstance(value, MarkedMap):
            text = self.section.validate(value, mark, path, ctx)
        else:
            return self.wrong_type(value, mark, path, ctx)
        if self.nonempty and text is not INVALID and not (text.zh.strip() or text.en.strip()):
            return ctx.add(mark, path, "must not be empty: give zh, en or both")
        return text

    def default_text(self) -> str:
        return '`""`' if not self.required else "required"


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_SANDBOX_TARGETS = 40  # labrunner.sandbox.layout.MAX_TARGETS (not imported: config stays light)


class SecretOpt(Option):
    """Where a secret comes from: ``{env: NAME}``; never the secret itself.

    Messages never repeat what was written here: it may be the secret. ``sandbox``: also
    ``{sandbox: N}``, the password of the sandbox's account N (an inventory entry's account).
    """

    type_name = "{env: VARIABLE, prompt: true/false}"

    def __init__(self, default: Any = None, help: str = "", *, sandbox: bool = False) -> None:
        super().__init__(default, help)
        self.sandbox = sandbox
        if sandbox:
            self.type_name = "{env: VARIABLE, prompt: true/false} or {sandbox: N}"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        from labrunner.config.model import SecretRef

        allowed = ("env", "prompt", "sandbox") if self.sandbox else ("env", "prompt")
        if not isinstance(value, MarkedMap):
            return ctx.add(mark, path, "write where the secret comes from, not the secret: "
                           "{env: QQ_AUTH_CODE} (then `export QQ_AUTH_CODE=...`), or {prompt: true}"
                           + (", or {sandbox: N} for the sandbox's account N" if self.sandbox else ""))
        bad = False
        for key in value:
            if key not in allowed:
                # `secret: {the-code}` makes the code a key: show where, never what
                ctx.add(value.key_mark(key), path, "unknown key (not shown: it may be the secret); "
                        f"allowed: {', '.join(allowed)}")
                bad = True
        if "sandbox" in value and self.sandbox:
            number = value.get("sandbox")
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_SANDBOX_TARGETS:
                ctx.add(value.value_mark("sandbox"), (*path, "sandbox"),
                        f"expected the number of a sandbox account, 1 to {MAX_SANDBOX_TARGETS} "
                        "(1 = student@lab.test, 2 = student2@lab.test ...)")
                bad = True
            for key in ("env", "prompt"):
                if key in value:
                    ctx.add(value.key_mark(key), (*path, key), "give sandbox or env/prompt, not both")
                    bad = True
            return INVALID if bad else SecretRef(prompt=False, state="password", sandbox=number)
        env = value.get("env")
        if "env" in value and not (isinstance(env, str) and _ENV_NAME.match(env)):
            ctx.add(value.value_mark("env"), (*path, "env"),
                    "must be the name of an environment variable (letters, digits, _), e.g. QQ_AUTH_CODE")
            bad = True
        prompt = value.get("prompt", True)
        if not isinstance(prompt, bool):
            ctx.add(value.value_mark("prompt"), (*path, "prompt"), "expected true or false")
            bad = True
        return INVALID if bad else SecretRef(env=env, prompt=prompt)

    def default_text(self) -> str:
        return "`{prompt: true}`" if self.default is not None else "—"


class ReplyCode(Int):
    """An SMTP reply code (550), or one digit for its class (5: any 5xx), as the sessions compare."""

    type_name = "an SMTP reply code (200-599) or class (2-5)"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        code = super().validate(value, mark, path, ctx)
        if code is not INVALID and not (2 <= code <= 5 or 200 <= code <= 599):
            return ctx.add(mark, path, f"{code} is not a reply code: 200 to 599, or 2 to 5 for a class")
        return code


class ExpectOpt(Option):
    """A reply a line must get: a number (SMTP) or a word (+OK, -ERR; OK, NO, BAD)."""

    type_name = "a reply code (220) or word (+OK, OK)"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return self.wrong_type(value, mark, path, ctx)
        return int(value) if isinstance(value, int) else value


class LinePort(Option):
    """A port number, or the profile's port for a mode: plain or tls."""

    type_name = "a port number or plain/tls"

    def validate(self, value: Any, mark: Mark, path: KeyPath, ctx: Ctx) -> Any:
        if isinstance(value, str):
            return Choice(("plain", "tls")).validate(value, mark, path, ctx)
        return Port().validate(value, mark, path, ctx)
