"""The one exception type for mistakes a user can fix.

Anything raised as :class:`NlptkError` is shown as a single line on stderr and
exits with code 2; everything else is a bug in nlptoolkit and keeps its
traceback.  Messages name the file, the key or line, and the fix.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


class NlptkError(Exception):
    """A problem with the user's input: recipe, data, checkpoint or argument."""

    exit_code = 2


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def where(path: Optional[str], line: Optional[int] = None) -> str:
    """Format 'file:line' for the start of an error message."""
    if path is None:
        return ""
    return f"{path}:{line}: " if line else f"{path}: "
