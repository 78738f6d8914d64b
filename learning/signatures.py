"""Error messages reduced to signatures, so that the same trouble is recognised however it is worded.

``Filter failure: NOTIONAL`` from a simulated broker, ``binance {"code":-1013,"msg":"Filter failure:
NOTIONAL"}`` from ccxt, and the same text with another order id or quantity all map to one signature.
Normalization is idempotent: normalizing a normalized message changes nothing.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "ID_TOKEN",
    "NUMBER_TOKEN",
    "QUOTED_TOKEN",
    "error_signature",
    "extract_code",
    "message_tokens",
    "normalize_message",
]

ID_TOKEN = "<id>"
NUMBER_TOKEN = "<n>"
QUOTED_TOKEN = "<q>"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_PREFIXED = re.compile(r"0x[0-9a-f]+")
# A bare hex run of 8+ characters with at least one digit and one letter is an id, not a word.
_HEX_BARE = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_SPACE = re.compile(r"\s+")
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_TOKEN_SPLIT = re.compile(r"[^a-z<>_]+")
_JSON_TEXT_KEYS = ("msg", "message", "error", "description")


def _json_body(message: str) -> tuple[str, dict[str, object]] | None:
    """The text before an embedded JSON object, and the object, when the message carries one."""
    match = _JSON_OBJECT.search(message)
    if match is None:
        return None
    try:
        body = json.loads(match.group(0))
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return message[: match.start()], body


def extract_code(message: str) -> str | None:
    """The exchange error code inside a JSON body (``{"code":-1013,...}`` -> ``"-1013"``), if any."""
    parsed = _json_body(message)
    if parsed is None:
        return None
    code = parsed[1].get("code")
    return None if code is None or isinstance(code, dict | list) else str(code)


def normalize_message(message: str) -> str:
    """Lower-case text with the variable parts replaced by placeholders.

    A JSON body's ``msg`` (or ``message``/``error``/``description``) replaces the whole message; UUIDs and hex
    ids become ``<id>``, quoted values ``<q>``, numbers ``<n>``; whitespace collapses.
    """
    text = message
    parsed = _json_body(text)
    if parsed is not None:
        # The text before the body is the transport's prefix (ccxt puts the exchange id there); the
        # body's message is what the exchange said, so it alone identifies the trouble.
        inner = next((parsed[1][k] for k in _JSON_TEXT_KEYS if isinstance(parsed[1].get(k), str)), None)
        if inner is not None:
            text = str(inner)
    text = text.lower()
    text = _UUID.sub(ID_TOKEN, text)
    text = _HEX_PREFIXED.sub(ID_TOKEN, text)
    text = _HEX_BARE.sub(ID_TOKEN, text)
    text = _QUOTED.sub(QUOTED_TOKEN, text)
    text = _NUMBER.sub(NUMBER_TOKEN, text)
    return _SPACE.sub(" ", text).strip()


def error_signature(kind: str, message: str, code: str | None = None) -> str:
    """``"<kind>|<code or ->|<normalized message>"``; the code comes from the JSON body when not given."""
    found = code if code is not None else extract_code(message)
    return f"{kind}|{found if found is not None else '-'}|{normalize_message(message)}"


def message_tokens(normalized: str) -> frozenset[str]:
    """Word tokens of a normalized message (for similarity matching)."""
    return frozenset(t for t in _TOKEN_SPLIT.split(normalized) if t)
