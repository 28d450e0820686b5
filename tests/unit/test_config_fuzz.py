"""Whatever a file holds, loading it ends in a result or a ConfigError: never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labrunner.config import schema
from labrunner.config.load import load_lab, load_scenarios
from labrunner.config.options import Section
from labrunner.config.yaml import YamlProblem, parse
from labrunner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _keys(section: Section, out: set[str]) -> set[str]:
    for key, option in section.fields.items():
        out.add(key)
        for inner in (option, getattr(option, "item", None), *getattr(option, "kinds", {}).values()):
            if isinstance(inner, Section) and inner.name not in out:
                out.add(inner.name)
                _keys(inner, out)
    return out


# Real key names make the generated documents reach deep into the schema, not stop at the top.
KEYS = sorted(_keys(schema.SCENARIO, set()) | _keys(schema.LAB, set()) | set(schema.STEP.kinds))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=False),
    st.sampled_from(["plain", "tls", "1.2", "{account.secret}", "{", "smtp", "+OK", "", "SHA256:x"]),
    st.text(max_size=12),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5),
    ),
    max_leaves=30,
)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300))
def test_any_text_parses_or_is_one_problem(text: str) -> None:
    try:
        parse(text)
    except YamlProblem as err:
        assert err.message and err.mark.line >= 1 and err.mark.column >= 1


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused(data: bytes) -> None:
    from labrunner.config.yaml import decode

    try:
        parse(decode(data))
    except YamlProblem as err:
        assert err.what in ("encoding", "yaml", "yaml syntax"), err.what


def _check(lab_text: str, scenario_text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "scenarios").mkdir()
        (root / "lab.yaml").write_text(lab_text, encoding="utf-8")
        (root / "scenarios" / "x.yaml").write_text(scenario_text, encoding="utf-8")
        try:
            load_scenarios(load_lab(root / "lab.yaml"), None)
        except ConfigError as err:
            for line in err.problems:
                assert ":" in line and "\n" not in line.strip("\n"), line


SANDBOX_LAB = "profiles:\n  sandbox: {from_sandbox: true}\n"


@FUZZ
@given(documents)
def test_any_scenario_document_loads_or_is_config_problems(doc: Any) -> None:
    _check(SANDBOX_LAB, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(documents)
def test_any_lab_document_loads_or_is_config_problems(doc: Any) -> None:
    _check(yaml.safe_dump(doc, allow_unicode=True), "title: x\nsteps: [pop3]\n")


@FUZZ
@given(st.data())
def test_shipped_scenarios_with_one_value_replaced(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted((ROOT / "scenarios").glob("*.yaml"))))
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    # Walk down a random path and put a random value there.
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, (dict, list)) or not child or data.draw(st.booleans()):
            node[key] = data.draw(documents)
            break
        node = child
    _check(SANDBOX_LAB, yaml.safe_dump(doc, allow_unicode=True))
