"""Bounded JSON loading: size, depth, NUL and lone-surrogate limits before
and after :func:`json.loads`, so hostile text costs little and parses safely."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from ..config import Limits
from .errors import (
    INVALID_JSON,
    INVALID_MESSAGE,
    INVALID_UTF8,
    JSON_TOO_DEEP,
    MESSAGE_TOO_LARGE,
    NUL_BYTE,
    ProtocolError,
)

__all__ = ["load_object"]


def _check_depth(text: str, limit: int) -> None:
    # json.loads recurses once per nesting level; a 64 KiB line of "[" would
    # blow the interpreter's recursion limit. Counting brackets is a cheap
    # upper bound, so the exact scan only runs on suspicious input.
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise ProtocolError(JSON_TOO_DEEP, f"JSON nested deeper than {limit} levels")
        elif ch in "]}":
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    # 1e999 would become inf, which we could only relay as the non-JSON
    # "Infinity"; refuse it like NaN.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _any_string(value: object, test: Callable[[str], bool]) -> bool:
    """Whether ``test`` holds for a string (key or value) anywhere in ``value``."""
    if isinstance(value, str):
        return test(value)
    if isinstance(value, dict):
        return any(test(k) or _any_string(v, test) for k, v in value.items())
    if isinstance(value, list):
        return any(_any_string(v, test) for v in value)
    return False


def _lone_surrogate(text: str) -> bool:
    # json.loads turns a "\ud800" escape into a lone surrogate, which no
    # UTF-8 encoder accepts: relaying it would fail in every subscriber's writer.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _nul(text: str) -> bool:
    return "\x00" in text


def _too_large(text: str, limit: int) -> bool:
    # The limit is in UTF-8 bytes; encoding is only needed when the
    # character count alone cannot decide (a character is at most 4 bytes).
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def load_object(text: str, limits: Limits, *, escaped_nul: bool = False) -> dict[str, Any]:
    """Parse one JSON object within the limits, or raise ProtocolError.

    A ``\\u0000`` escape is refused like a raw NUL (``nul_byte``) unless
    ``escaped_nul`` is set: a client reading the server's messages takes
    whatever valid JSON it is sent.
    """
    if _too_large(text, limits.max_message_bytes):
        raise ProtocolError(
            MESSAGE_TOO_LARGE, f"message longer than {limits.max_message_bytes} bytes"
        )
    if "\x00" in text:
        raise ProtocolError(NUL_BYTE, "NUL characters are not allowed")
    _check_depth(text, limits.max_json_depth)
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_MESSAGE, "expected a JSON object")
    if not escaped_nul and "\\u0000" in text and _any_string(obj, _nul):
        # The same refusal as a raw NUL: a "\u0000" escape is one in disguise.
        raise ProtocolError(NUL_BYTE, "NUL characters are not allowed (\\u0000 escape)")
    if "\\u" in text and _any_string(obj, _lone_surrogate):
        raise ProtocolError(
            INVALID_UTF8, "a \\u escape encodes a lone surrogate, which is not Unicode text"
        )
    return obj
