"""Evidence a teaching assistant can check: a sanitized copy of each capture (no credential in
it, in any form), attached to report.pdf with the data the report was rendered from, and
``labrunner verify`` that re-analyses those captures and compares (docs/evidence.md)."""

from labrunner.evidence.sanitize import SANITIZED, SanitizeResult, sanitize, secret_byte_forms

__all__ = ["SANITIZED", "SanitizeResult", "sanitize", "secret_byte_forms"]
