"""Prints the conformance pass rates at the end of every pytest run, even with -q."""
from __future__ import annotations

SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if SUMMARIES:
        terminalreporter.write_sep("=", "ONNX backend conformance")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
