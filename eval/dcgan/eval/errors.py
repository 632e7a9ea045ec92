"""The two ways an evaluation fails: bad options (exit 2) and bad data or environment (exit 1)."""

from __future__ import annotations


class OptionError(Exception):
    """Options that cannot work together, or a value no evaluation can use (exit 2)."""


class EvalError(Exception):
    """Data, a file, a server or an environment that the evaluation cannot use (exit 1)."""
