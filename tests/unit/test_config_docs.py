"""docs/configuration.md says what the code does: its tables and its scenario example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labrunner.config.load import load_lab, load_scenarios
from labrunner.config.schema import docs_tables
from labrunner.config.yaml import parse

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)


def test_option_tables_match_the_schema() -> None:
    generated = re.search(r"<!-- BEGIN GENERATED[^>]*-->\n(.*)<!-- END GENERATED -->", DOC, flags=re.S)
    assert generated, "the generated block is missing"
    assert generated.group(1) == docs_tables(), (
        "docs/configuration.md is out of date: paste the output of "
        "`python -c 'from labrunner.config.schema import docs_tables; print(docs_tables())'`")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_yaml_example_parses(block: str) -> None:
    parse(block)


def test_the_scenario_example_is_a_valid_scenario(tmp_path: Path) -> None:
    (example,) = [b for b in BLOCKS if b.startswith("title:")]
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "telnet-smtp.yaml").write_text(example, encoding="utf-8")
    (tmp_path / "lab.yaml").write_text("profiles:\n  sandbox: {from_sandbox: true}\n")
    (sc,) = load_scenarios(load_lab(tmp_path / "lab.yaml"), None)
    assert sc.section == "4.4" and len(sc.steps[0].script) == 10  # type: ignore[union-attr]
