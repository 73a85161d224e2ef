"""User-facing errors: one line saying what is wrong, where, and how to fix it.

The command-line entry points print these without a traceback and exit with status 2.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Sequence


class SRACLError(Exception):
    """Base class for errors caused by user input (files, config values, servers)."""


class ConfigError(SRACLError):
    """An invalid configuration key, value or file."""


class DatasetError(SRACLError):
    """A missing or malformed dataset, atomic file or field."""


class SemanticFilesError(SRACLError):
    """Missing, stale or malformed semantic files (.uemb/.iemb/neighbour files/manifest)."""


class LLMError(SRACLError):
    """The LLM server could not be used (unreachable, wrong key, too many failures)."""


def require_one_of(name: str, value: object, choices: Sequence[object], error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` naming ``name`` and its allowed values unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise error(f"{name} must be one of {tuple(choices)}, got {value!r}")
