"""Execution backends: ``reference`` (numpy, the oracle and CPU fallback)."""
