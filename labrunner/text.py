"""A text a student reads, in Chinese and English: labrunner's one bilingual type.

The ground floor of the package: it imports nothing of labrunner, so the configuration, the
protocol tables (``labrunner/protocols``), the analysis, the sessions and the report all use it
without an import circle. The argument order is always ``Text(zh, en)``, as in the protocol
tables and the report's catalogue (``report/i18n.py``'s ``(zh, en)`` pairs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Text:
    """A text a student reads, in Chinese and English; either may be missing."""

    zh: str = ""
    en: str = ""

    def get(self, lang: str) -> str:
        """The text in ``lang`` ("zh" or "en"), else in the other language."""
        first, second = (self.zh, self.en) if lang == "zh" else (self.en, self.zh)
        return first or second

    def __add__(self, other: Text | str) -> Text:
        """Each language's text followed by ``other`` (a Text, or a string in every language)."""
        zh, en = self.get("zh"), self.get("en")
        if isinstance(other, str):
            return Text(zh + other, en + other)
        return Text(zh + other.get("zh"), en + other.get("en"))

    def __radd__(self, other: str) -> Text:
        return Text(other + self.get("zh"), other + self.get("en"))

    def map(self, change: Callable[[str], str]) -> Text:
        """``change`` applied to the text of each language (e.g. a redactor)."""
        return Text(change(self.get("zh")), change(self.get("en")))

    @cached_property
    def pair(self) -> dict[str, str]:
        """The JSON form: ``{"zh": ..., "en": ...}`` (each language's text, as ``get`` gives it).
        Made once per Text (the protocol tables' are asked on every line of a capture): one dict
        shared by every document that holds it, so never changed in place."""
        return {"zh": self.get("zh"), "en": self.get("en")}


Bilingual = str | dict[str, str]  # a string of a JSON document, or Text.pair(): in both languages


def is_pair(value: object) -> bool:
    """Whether ``value`` is a text in both languages as JSON documents hold it (``Text.pair``)."""
    return isinstance(value, dict) and value.keys() == {"zh", "en"}


def in_language(value: Any, lang: str) -> Any:
    """A JSON document (an analysis.json) with each ``{"zh": ..., "en": ...}`` text in ``lang``
    (else the other language); everything else as it is. The document is not changed."""
    if isinstance(value, dict):
        if is_pair(value):
            own, other = (value["zh"], value["en"]) if lang == "zh" else (value["en"], value["zh"])
            return own or other
        return {k: in_language(v, lang) for k, v in value.items()}
    if isinstance(value, list):
        return [in_language(v, lang) for v in value]
    return value
