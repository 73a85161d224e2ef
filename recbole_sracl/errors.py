"""User-facing errors: one line saying what is wrong, where, and how to fix it.

The command-line entry points print these without a traceback and exit with status 2.
Anything else that escapes is a bug and keeps its traceback.
"""


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
