"""A text a student reads, in Chinese and English: labrunner's one bilingual type.

The ground floor of the package: it imports nothing of labrunner, so the configuration, the
protocol tables (``labrunner/protocols``), the analysis, the sessions and the report all use it
without an import circle. The argument order is always ``Text(zh, en)``, as in the protocol
tables and the report's catalogue (``report/i18n.py``'s ``(zh, en)`` pairs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Text:
    """A text a student reads, in Chinese and English; either may be missing."""

    zh: str = ""
    en: str = ""

    def get(self, lang: str) -> str:
        """The text in ``lang`` ("zh" or "en"), else in the other language."""
        first, second = (self.zh, self.en) if lang == "zh" else (self.en, self.zh)
        return first or second
