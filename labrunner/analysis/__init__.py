"""Protocol analysis of captures with Wireshark's engine (tshark).

``analyze(capture)`` returns the document described in docs/analysis.md: per TCP stream the
protocol, endpoints, annotated dialogue, TLS handshake, mail summaries and statistics.
Heavy work happens in tshark; this package reads its output as a stream.
"""

from __future__ import annotations

from labrunner.analysis.core import SCHEMA, analyze
from labrunner.analysis.tshark import CaptureFileError, tshark_version

__all__ = ["SCHEMA", "CaptureFileError", "analyze", "tshark_version"]
