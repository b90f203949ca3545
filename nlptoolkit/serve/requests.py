"""Reading a request body: JSON in, checked inputs out, or a :class:`BadRequest`.

Plain functions over bytes, so every rule is tested without a server. Each
mistake gets its own status and a one-line message naming the field and the
fix: 400 for a body that is not JSON, 422 for JSON of the wrong shape, 413
for more than the server's limits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from nlptoolkit.errors import did_you_mean


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Bounded so that one client cannot stall the others."""

    max_texts: int = 64          # texts in one /predict request
    max_chars: int = 2000        # characters in one text (or /generate prompt)
    max_new_tokens: int = 2000   # tokens one /generate request may ask for

    @property
    def max_body_bytes(self) -> int:
        # the largest valid body, written with \uXXXX escapes everywhere, plus room for the JSON around it
        return self.max_texts * (6 * self.max_chars + 16) + 4096


class BadRequest(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``; the server carries on."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_object(body: bytes, fields: Dict[str, str]) -> Dict[str, Any]:
    """The body as a JSON object with only the known ``fields`` (name -> what it is, for the error)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise BadRequest(400, f"the body is not valid JSON ({' '.join(str(exc).split())}); send a JSON object such as {example(fields)}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, f"the body is a JSON {json_type(data)}; send a JSON object such as {example(fields)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise BadRequest(422, f"unknown field '{unknown[0]}'{did_you_mean(unknown[0], fields)}; the fields are {', '.join(fields)}")
    return data


def read_predict(body: bytes, limits: Limits) -> List[str]:
    """The texts of a ``/predict`` body ``{"texts": ["...", ...]}``."""
    data = parse_object(body, {"texts": "a list of strings"})
    if "texts" not in data:
        raise BadRequest(422, 'missing field \'texts\'; send {"texts": ["a sentence", ...]}')
    texts = data["texts"]
    if not isinstance(texts, list):
        raise BadRequest(422, f"texts: expected a list of strings, got a JSON {json_type(texts)}")
    if not texts:
        raise BadRequest(422, "texts: the list is empty; give at least one text")
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f"texts: {len(texts)} texts, more than this server's limit of {limits.max_texts} per request; split them over several requests")
    for i, text in enumerate(texts):
        check_text(text, f"texts[{i}]", limits)
    return texts


def read_generate(body: bytes, limits: Limits) -> Dict[str, Any]:
    """The settings of a ``/generate`` body, as keyword arguments of ``Run.generate_stream``."""
    data = parse_object(body, {
        "prompt": "a string", "max_tokens": "an integer", "temperature": "a number", "top_k": "an integer or null", "seed": "an integer or null",
    })
    prompt = data.get("prompt", "")
    if prompt:
        check_text(prompt, "prompt", limits)
    elif not isinstance(prompt, str):
        raise BadRequest(422, f"prompt: expected a string, got a JSON {json_type(prompt)}")
    max_tokens = integer(data, "max_tokens", min(200, limits.max_new_tokens), low=0)
    if max_tokens > limits.max_new_tokens:
        raise BadRequest(413, f"max_tokens: {max_tokens} is more than this server's limit of {limits.max_new_tokens}")
    temperature = data.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < float("inf"):
        raise BadRequest(422, f"temperature: expected a number >= 0 (0: greedy), got {json.dumps(temperature)}")
    return {
        "prompt": prompt, "max_tokens": max_tokens, "temperature": float(temperature),
        "top_k": integer(data, "top_k", None, low=1), "seed": integer(data, "seed", None, low=0),
    }


def check_text(text: Any, name: str, limits: Limits) -> None:
    if not isinstance(text, str):
        raise BadRequest(422, f"{name}: expected a string, got a JSON {json_type(text)}")
    if not text.strip():
        raise BadRequest(422, f"{name}: the text is empty; give some words")
    if len(text) > limits.max_chars:
        raise BadRequest(413, f"{name}: {len(text)} characters, more than this server's limit of {limits.max_chars}; shorten it or split it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate such as "\ud800": JSON allows it, Unicode text does not
        raise BadRequest(422, f"{name}: not valid Unicode (a lone surrogate \\u{ord(text[exc.start]):04x} at character {exc.start})") from None


def integer(data: Dict[str, Any], key: str, default: Optional[int], low: int) -> Optional[int]:
    value = data.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadRequest(422, f"{key}: expected an integer >= {low}, got {json.dumps(value)}")
    return value


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def example(fields: Dict[str, str]) -> str:
    return '{"texts": ["a sentence"]}' if "texts" in fields else '{"prompt": "ROMEO:", "max_tokens": 200}'
