"""Protocol analysis of captures with Wireshark's engine (tshark).

``analyze(capture)`` returns the document described in docs/analysis.md: per TCP stream the
protocol, endpoints, annotated dialogue, TLS handshake, mail summaries and statistics.
Heavy work happens in tshark; this package reads its output as a stream.

``analyze`` and ``SCHEMA`` are imported on first use (PEP 562): ``labrunner analyze`` starts
tshark through ``labrunner.analysis.tshark`` before the dialogue and mail modules are loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labrunner.analysis.tshark import CaptureFileError, tshark_version

if TYPE_CHECKING:
    from labrunner.analysis.streams import SCHEMA, analyze

__all__ = ["SCHEMA", "CaptureFileError", "analyze", "tshark_version"]


def __getattr__(name: str) -> Any:
    if name in ("SCHEMA", "analyze"):
        from labrunner.analysis import streams

        return getattr(streams, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
