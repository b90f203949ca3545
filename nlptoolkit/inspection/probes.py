"""Probes: simple facts about a text, one number per character, to hold units up against.

A probe is a plain function from the text to one value per character. If a
hidden unit's activation goes up and down with a probe over a long text (a high
Pearson correlation), the unit tracks that fact: Karpathy, Johnson and Fei-Fei
(2015) found cells that switch on inside quotes and cells that count the
position in the line. The built-in probes are below; a plugin adds its own
with ``@nlptoolkit.register_probe("name")``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

Probe = Callable[[str], Sequence[float]]

QUOTES = {'"': '"', "\u201c": "\u201d"}  # opening -> closing; ' is mostly an apostrophe in English
OPENING, CLOSING = "([{", ")]}"
SENTENCE_ENDS = ".!?"


def inside_quotes(text: str) -> List[float]:
    """1 from an opening double quote to its closing one (both included), else 0."""
    values, closing = [], None
    for ch in text:
        if closing is None and ch in QUOTES:
            closing = QUOTES[ch]
            values.append(1.0)
            continue
        values.append(1.0 if closing is not None else 0.0)
        if closing is not None and ch == closing:
            closing = None
    return values


def bracket_depth(text: str) -> List[float]:
    """How many ( [ { are open here (the bracket itself counts as inside)."""
    values, depth = [], 0
    for ch in text:
        if ch in OPENING:
            depth += 1
        values.append(float(depth))
        if ch in CLOSING and depth > 0:
            depth -= 1
    return values


def line_position(text: str) -> List[float]:
    """Characters since the start of the line: 0 for the first one (and for the line break)."""
    values, column = [], 0
    for ch in text:
        values.append(float(column))
        column = 0 if ch == "\n" else column + 1
    return values


def word_start(text: str) -> List[float]:
    """1 at the first character of a word (a letter or digit after anything else), else 0."""
    values, previous = [], " "
    for ch in text:
        values.append(1.0 if ch.isalnum() and not (previous.isalnum() or previous in "'\u2019") else 0.0)
        previous = ch
    return values


def sentence_end(text: str) -> List[float]:
    """1 at a . ! or ? that ends a sentence (followed by a space, a line break or the end), else 0."""
    values = []
    for i, ch in enumerate(text):
        after = text[i + 1] if i + 1 < len(text) else " "
        values.append(1.0 if ch in SENTENCE_ENDS and (after.isspace() or after in "\"'\u201d)") else 0.0)
    return values


BUILTIN_PROBES: Dict[str, Probe] = {
    "inside_quotes": inside_quotes,
    "bracket_depth": bracket_depth,
    "line_position": line_position,
    "word_start": word_start,
    "sentence_end": sentence_end,
}
