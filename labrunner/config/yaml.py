"""Safe YAML loading that remembers where every value came from.

PyYAML's constructors drop line numbers, so we compose the node graph with a
``yaml.SafeLoader`` subclass and build the Python values ourselves: mappings become
:class:`MarkedMap` and sequences :class:`MarkedList`, each carrying the marks of its keys and
items, so validation can point at ``file:line:col`` for every problem.

Building the values ourselves is also where hostile input is stopped. Aliases are shared nodes
in the composed graph; expanding them is what makes "billion laughs" explode, so the walk
counts every node it produces and gives up at a fixed budget, refuses aliases beyond a small
number, and refuses recursive ones. Duplicate keys, which PyYAML silently lets the last one win,
are reported as problems.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

# A real lab or scenario file has a few hundred nodes; these limits are far above that and
# far below what makes the walk slow (a budget of 100k nodes takes well under a second).
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 64
MAX_INT_DIGITS = 1000  # far above any setting; Python refuses int() of over 4300 digits
MAX_BYTES = 1_000_000

MERGE_TAG = "tag:yaml.org,2002:merge"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass(frozen=True)
class Mark:
    """A 1-based position as an editor shows it (line, column in characters)."""

    line: int
    column: int

    @classmethod
    def of(cls, mark: yaml.Mark | None) -> Mark:
        if mark is None:
            return cls(1, 1)
        return cls(mark.line + 1, mark.column + 1)


class MarkedMap(dict[Any, Any]):
    """A mapping from YAML with the marks of the mapping, each key and each value."""

    mark: Mark
    key_marks: dict[Any, Mark]
    value_marks: dict[Any, Mark]

    def key_mark(self, key: Any) -> Mark:
        return self.key_marks.get(key, self.mark)

    def value_mark(self, key: Any) -> Mark:
        return self.value_marks.get(key, self.mark)


class MarkedList(list[Any]):
    """A sequence from YAML with the marks of the sequence and each item."""

    mark: Mark
    item_marks: list[Mark]

    def item_mark(self, index: int) -> Mark:
        return self.item_marks[index] if 0 <= index < len(self.item_marks) else self.mark


class MarkedInt(int):
    """An integer from YAML that remembers how it was written (``0123`` is 83 in YAML 1.1)."""

    source: str


class MarkedFloat(float):
    """A float from YAML that remembers how it was written (``4.10`` is 4.1 as a number)."""

    source: str


def source_text(value: Any) -> str:
    """How a scalar was written in the file, where we know it; else its string form."""
    return getattr(value, "source", None) or str(value)


class YamlProblem(Exception):
    """A problem that stops reading a file (syntax, encoding, a hostile document)."""

    def __init__(self, mark: Mark, what: str, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.what = what
        self.message = message


@dataclass(frozen=True)
class DocProblem:
    """A problem found while building the values (a duplicate key); the file is still read."""

    mark: Mark
    path: tuple[str | int, ...]
    message: str


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts aliases while composing, so a flood of them stops early.

    Booleans are YAML 1.2's ``true``/``false`` only: YAML 1.1 also reads ``yes``, ``no``, ``on``
    and ``off`` as booleans, which turns a student's word into a surprise.
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 (PyYAML's own class attribute, replaced per class)
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                event = self.peek_event()
                raise YamlProblem(
                    Mark.of(event.start_mark), "yaml",
                    f"more than {MAX_ALIASES} aliases (*name); refusing a document that may "
                    "expand without bound — write the values out instead",
                )
        # PyYAML composes recursively: stop deep nesting here, at its position, long before
        # Python's recursion limit would.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise YamlProblem(Mark.of(self.peek_event().start_mark), "yaml",
                                  f"nested more than {MAX_DEPTH} levels deep; refusing it")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def decode(data: bytes) -> str:
    """The text of a config file; refuses binary and non-UTF-8 data with a located message."""
    if b"\0" in data[:8192]:
        raise YamlProblem(Mark(1, 1), "encoding",
                          "this is a binary file, not YAML text; check the file name")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start].decode("utf-8", "replace")
        raise YamlProblem(
            _mark_at(before, len(before)), "encoding",
            f"not UTF-8 text (byte 0x{data[err.start]:02x}); save the file as UTF-8",
        ) from None
    return text.removeprefix("\ufeff")


class _Builder:
    """Turns a composed node graph into marked Python values, within the budgets above."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.nodes = 0
        self.problems: list[DocProblem] = []
        self._active: set[int] = set()

    def build(self, node: Node, path: tuple[str | int, ...], depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise YamlProblem(
                Mark.of(node.start_mark), "yaml",
                f"the document expands to more than {MAX_NODES} values (aliases inside aliases?); "
                "refusing it",
            )
        if depth > MAX_DEPTH:
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              f"nested more than {MAX_DEPTH} levels deep; refusing it")
        if isinstance(node, ScalarNode):
            value = self._scalar(node)
            # A string option given an unquoted number (a student ID, a section, a version) takes
            # the text as written, not the number YAML made of it.
            if type(value) is int:
                value = MarkedInt(value)
                value.source = node.value
            elif type(value) is float:
                value = MarkedFloat(value)
                value.source = node.value
            return value
        if node.tag not in (_SEQ_TAG, _MAP_TAG):
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              f"the tag {node.tag} is not allowed here; write plain YAML")
        if id(node) in self._active:
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              "an alias refers to a value that contains it (a loop); refusing it")
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path, depth)
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
        finally:
            self._active.discard(id(node))
        raise YamlProblem(Mark.of(node.start_mark), "yaml", f"unsupported YAML node {node.tag}")

    def _scalar(self, node: ScalarNode) -> Any:
        """The scalar's value; a number too long for Python (over 4300 digits) or a lone
        surrogate (``"\\ud800"``, half of a UTF-16 pair, which no UTF-8 text can carry) is a
        located problem here, not a crash where the value is used."""
        digits = len(re.sub(r"[^0-9a-fA-F]", "", node.value))
        if node.tag == "tag:yaml.org,2002:int" and digits > MAX_INT_DIGITS:
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              f"a number {digits} digits long; no setting takes one that long, "
                              "write a smaller number (or quote it if it is text)")
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, str):
            lone = next((i for i, ch in enumerate(value) if 0xD800 <= ord(ch) <= 0xDFFF), None)
            if lone is not None:
                raise YamlProblem(Mark.of(node.start_mark), "yaml",
                                  f"the escape \\u{ord(value[lone]):04x} is half of a UTF-16 pair (a lone "
                                  "surrogate), which no text can hold; write the character itself")
        return value

    def _sequence(self, node: SequenceNode, path: tuple[str | int, ...], depth: int) -> MarkedList:
        out = MarkedList()
        out.mark = Mark.of(node.start_mark)
        out.item_marks = []
        for i, item in enumerate(node.value):
            out.append(self.build(item, (*path, i), depth + 1))
            out.item_marks.append(Mark.of(item.start_mark))
        return out

    def _mapping(self, node: MappingNode, path: tuple[str | int, ...], depth: int) -> MarkedMap:
        out = MarkedMap()
        out.mark = Mark.of(node.start_mark)
        out.key_marks = {}
        out.value_marks = {}
        merged: list[MarkedMap] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path, depth))
                continue
            key = self.build(key_node, path, depth + 1)
            if isinstance(key, (MarkedMap, MarkedList)):
                raise YamlProblem(Mark.of(key_node.start_mark), "yaml",
                                  "a key must be a plain value, not a mapping or a list")
            key_mark = Mark.of(key_node.start_mark)
            if key in out.key_marks:
                first = out.key_marks[key]
                self.problems.append(DocProblem(
                    key_mark, (*path, key),
                    f"duplicate key (first at line {first.line}); keep only one",
                ))
                continue
            out[key] = self.build(value_node, (*path, key), depth + 1)
            out.key_marks[key] = key_mark
            out.value_marks[key] = Mark.of(value_node.start_mark)
        # `<<: *base` fills in the keys the mapping does not set itself, as YAML 1.1 says.
        for source in merged:
            for key, value in source.items():
                if key not in out:
                    out[key] = value
                    out.key_marks[key] = source.key_mark(key)
                    out.value_marks[key] = source.value_mark(key)
        return out

    def _merge_sources(self, node: Node, path: tuple[str | int, ...], depth: int) -> list[MarkedMap]:
        value = self.build(node, path, depth + 1)
        sources = value if isinstance(value, MarkedList) else [value]
        if not all(isinstance(s, MarkedMap) for s in sources):
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              "`<<:` must be followed by a mapping or a list of mappings")
        return list(sources)


def parse(text: str) -> tuple[Any, list[DocProblem]]:
    """The marked value of a one-document YAML text, and the problems found while building it.

    Raises :class:`YamlProblem` for syntax errors and hostile documents.
    """
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as err:  # raised before any mark exists: locate it ourselves
        raise YamlProblem(_mark_at(text, err.position), "encoding",
                          f"the control character U+{err.character:04X} is not allowed in YAML; "
                          "remove it") from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            raise _syntax_problem(text, err) from None
        except yaml.YAMLError as err:
            raise YamlProblem(Mark(1, 1), "yaml syntax", _tidy(str(err))) from None
        except RecursionError:
            raise YamlProblem(Mark(1, 1), "yaml",
                              f"nested too deeply (more than {MAX_DEPTH} levels); refusing it") from None
        if node is None:
            return None, []
        _check_expansion(node)
        builder = _Builder(loader)
        try:
            value = builder.build(node, ())
        except yaml.MarkedYAMLError as err:  # a scalar that cannot be constructed (bad timestamp)
            raise YamlProblem(Mark.of(err.problem_mark), "yaml", _tidy(err.problem or str(err))) from None
        return value, builder.problems
    finally:
        loader.dispose()


def _syntax_problem(text: str, err: yaml.MarkedYAMLError) -> YamlProblem:
    """A syntax error as a student can act on it; PyYAML's own words when it is none we know."""
    known = _known_syntax_problem(text, err)
    if known is not None:
        return YamlProblem(known[0], "yaml syntax", known[1])
    mark = err.problem_mark or err.context_mark
    message = err.problem or "invalid YAML"
    if err.context and err.problem:
        message = f"{err.problem} ({err.context})"
    return YamlProblem(Mark.of(mark), "yaml syntax", _tidy(message))


# The parser's phrases for a line that does not line up with its neighbours.
_INDENT_PROBLEMS = ("expected <block end>, but found '<block mapping start>'",
                    "expected <block end>, but found '<block sequence start>'",
                    "expected <block end>, but found '-'",
                    "did not find expected key", "mapping values are not allowed here")


def _known_syntax_problem(text: str, err: yaml.MarkedYAMLError) -> tuple[Mark, str] | None:
    problem, context = err.problem or "", err.context or ""
    at, opened = err.problem_mark, err.context_mark
    if at is None:
        return None
    if problem.startswith("found character '\\t'"):
        return Mark.of(at), "a tab character: YAML indents with spaces only; replace the tab with spaces"
    if context == "while scanning a quoted scalar" and opened is not None and (
            "end of stream" in problem or "document separator" in problem):
        quote = _char_at(text, opened.index)
        return Mark.of(opened), f"the quote `{quote}` opened here is never closed; add the closing `{quote}`"
    if problem == "expected <block end>, but found '<scalar>'" or problem.startswith("expected ',' or"):
        quoted = _quote_across_lines(text, at)
        if quoted is not None:
            return quoted
    if context in ("while parsing a flow mapping", "while parsing a flow sequence") and opened is not None \
            and problem.startswith("expected ',' or") and at.line > opened.line:
        # A bracket still open on a later line is, in these files, one that was never closed.
        bracket, closing = ("{", "}") if "mapping" in context else ("[", "]")
        return Mark.of(opened), (f"the `{bracket}` opened here is never closed; add the closing `{closing}` "
                                 "after its last item (items are separated by `,`)")
    if any(problem.startswith(p) for p in _INDENT_PROBLEMS):
        found = _indentation(text, at.line, at.column, mapping_value=problem.startswith("mapping values"))
        if found is None and problem.startswith("mapping values"):
            found = _colon_in_value(text, at.line)
        return found
    if problem.startswith("could not find expected ':'") and context == "while scanning a simple key" \
            and opened is not None:
        return _left_block(text, opened.line)
    return None


def _colon_in_value(text: str, line: int) -> tuple[Mark, str] | None:
    """`zh: 实验4.4: 使用 telnet`: a second `: ` on the line, inside a plain value (D11)."""
    lines = text.split("\n")
    if not 0 <= line < len(lines):
        return None
    body = lines[line]
    head, sep, value = body.partition(": ")
    key = head.strip().removeprefix("- ")
    value = value.split(" #", 1)[0].strip()
    if not sep or not key or ": " not in value or value[:1] in ("'", '"', "{", "[", "|", ">"):
        return None
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return Mark(line + 1, len(head) + 3), (
        f"the value of `{key}` holds `: `, which YAML reads as a new key; quote the value: {key}: {quoted}")


def _left_block(text: str, line: int) -> tuple[Mark, str] | None:
    """A line indented less than the block text (`reflections: |`) it belongs to ends the block
    there, and is then read as a key without `:` (D11): say which block and how far to indent."""
    lines = _content_lines(text)
    if line not in lines:
        return None
    spaces = _indent(lines[line])
    for n in sorted((n for n in lines if n < line), reverse=True):
        opener = lines[n].split(" #", 1)[0].rstrip()
        if _indent(lines[n]) < spaces and not re.search(r":\s*[|>][-+0-9]*$", opener):
            return None  # a parent of this line that opens no block: not this slip
        if re.search(r":\s*[|>][-+0-9]*$", opener) and _indent(lines[n]) < spaces + 2:
            following = [m for m in sorted(lines) if n < m < line]
            if not following:
                return None
            block = _indent(lines[following[0]])
            if spaces >= block:
                return None
            key = opener.strip().removeprefix("- ").split(":", 1)[0]
            return Mark(line + 1, spaces + 1), (
                f"this line is indented {_spaces(spaces)}, less than the text of `{key}: {opener[-1]}` "
                f"(line {n + 1}), whose lines are indented {block}: indent it {block} spaces like them "
                "(a shallower line ends the text)")
    return None


def _char_at(text: str, index: int) -> str:
    return text[index] if 0 <= index < len(text) else "quote"


def _quote_across_lines(text: str, at: yaml.Mark) -> tuple[Mark, str] | None:
    """A quote left open that a quote on a later line happens to close: where it opened.

    The parser only sees what comes after (a scalar where a key should be), so the tokens
    before the error are read again to find a quoted value that runs over a line end.
    """
    last: yaml.ScalarToken | None = None
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= at.index:
                break
            if isinstance(token, yaml.ScalarToken):
                last = token
    except yaml.YAMLError:
        pass
    if last is None or last.style not in ('"', "'") or last.end_mark.line == last.start_mark.line:
        return None
    quote = last.style
    return Mark.of(last.start_mark), (f"the quote `{quote}` opened here is closed only on line "
                                      f"{last.end_mark.line + 1}; add the closing `{quote}` on this line")


def _content_lines(text: str) -> dict[int, str]:
    """0-based line number → line, for the lines that hold YAML (not blank, not a comment)."""
    return {i: line for i, line in enumerate(text.split("\n"))
            if line.strip() and not line.lstrip(" ").startswith("#")}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _indentation(text: str, line: int, column: int, *, mapping_value: bool) -> tuple[Mark, str] | None:
    """Which of the two lines where the parser stopped is out of line, and by how much.

    PyYAML notices a misplaced key only on the line after a too-shallow one, so the problem
    line and the content line before it are both suspects. The one whose indentation is not
    a multiple of the file's step (a one-space slip) is the culprit; otherwise the one that
    differs from the next line.
    """
    lines = _content_lines(text)
    numbers = sorted(lines)
    if line not in lines or numbers.index(line) == 0:
        return None
    here = numbers.index(line)
    if mapping_value and ": " in lines[line][:column]:
        return None  # `a: b: c` on one line: not an indentation slip
    prev = numbers[here - 1]
    nxt = numbers[here + 1] if here + 1 < len(numbers) else None
    p, cur = _indent(lines[prev]), _indent(lines[line])
    if p == cur:
        return None
    others = [_indent(lines[n]) for n in numbers if n not in (prev, line)]
    # The file's step (2 in ours); a file too small to tell is taken to use the usual 2.
    step = math.gcd(*others) or 2
    n = _indent(lines[nxt]) if nxt is not None else None
    if step > 1 and (p % step == 0) != (cur % step == 0):
        off = prev if p % step else line
    elif n == cur:
        off = prev
    else:
        off = line
    spaces = _indent(lines[off])
    what = "keys of one mapping"
    at_off = numbers.index(off)
    levels: set[int] = set()
    for near in numbers[max(at_off - 1, 0):at_off + 2]:
        if near != off:
            levels.add(_indent(lines[near]))
            if lines[near].lstrip(" ").startswith("- "):  # its key lines up with the keys below it
                levels.add(_indent(lines[near]) + 2)
    if lines[off].lstrip(" ").startswith("- "):
        # A list item lines up with the item before it, not with that item's keys.
        what = "items of one list"
        items = [n for n in numbers if n < off and lines[n].lstrip(" ").startswith("- ")]
        levels = {_indent(lines[items[-1]])} if items else levels
    levels.discard(spaces)
    if not levels:
        return None
    # The nearest level is the one meant; of two equally near, the deeper (a key under a `- `).
    around = min(levels, key=lambda level: (abs(level - spaces), -level))
    return Mark(off + 1, spaces + 1), (
        f"indentation: this line is indented {_spaces(spaces)}, the lines around it {around}; "
        f"{what} must line up")


def _spaces(n: int) -> str:
    return "1 space" if n == 1 else f"{n} spaces"


def _mark_at(text: str, position: int) -> Mark:
    before = text[:position]
    return Mark(before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1)


def _check_expansion(root: Node) -> None:
    """Refuse at once a graph whose expansion is too large, before building any of it.

    Sizes are memoised per node, so this costs one pass over the composed graph, however
    large the expansion would be.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if depth > MAX_DEPTH:
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              f"nested more than {MAX_DEPTH} levels deep; refusing it")
        if id(node) in active:
            raise YamlProblem(Mark.of(node.start_mark), "yaml",
                              "an alias refers to a value that contains it (a loop); refusing it")
        total = 1
        if isinstance(node, (SequenceNode, MappingNode)):
            active.add(id(node))
            children = node.value if isinstance(node, SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_NODES:
                    raise YamlProblem(
                        Mark.of(child.start_mark), "yaml",
                        f"the document expands to more than {MAX_NODES} values (aliases inside "
                        "aliases?); refusing it",
                    )
            active.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def _tidy(message: str) -> str:
    # PyYAML's phrases are fine, but some carry a trailing mark description we print ourselves.
    return " ".join(message.split())


def read(path: Path) -> tuple[Any, list[DocProblem]]:
    """Read and parse one YAML file; raises OSError and :class:`YamlProblem`."""
    return parse(decode(_read_bytes(path)))


def _read_bytes(path: Path) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlProblem(Mark(1, 1), "file",
                          f"larger than {MAX_BYTES // 1000} kB; a lab or scenario file is far smaller")
    return data
