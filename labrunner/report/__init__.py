"""The lab report: context (one function), HTML via Jinja2 templates, PDF via WeasyPrint."""

from __future__ import annotations

from labrunner.report.render import render_html, render_report

__all__ = ["render_html", "render_report"]
