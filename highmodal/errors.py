"""User-facing errors: one clear line, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations

import difflib


class HighmodalError(Exception):
    """An error caused by user input (config, data, checkpoint, flag), not by a bug."""

    exit_code = 2


def did_you_mean(word: str, options: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return a ' (did you mean X?)' suffix when a close option exists, else ''."""
    close = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
