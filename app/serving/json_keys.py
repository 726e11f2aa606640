"""Repeated keys in JSON objects, refused by every surface (I-JSON, RFC 7493).

The parsers behind validation (pydantic's, simdjson) silently keep the last of a repeated key,
so `{"a": 1, "a": 2}` would be read as `{"a": 2}`. Finding a repeat needs a second parse.
"""

import json
import re
from typing import Any

# An array holding only numbers: it holds no keys, so the first pass empties it.
_NUMERIC_ARRAY = re.compile(rb"\[[-+0-9.eE,\s]*\]")


class _Repeated(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _Repeated(next(name for name in names if names.count(name) > 1))
    return {}  # only the keys matter here


def first_repeated_key(document: bytes) -> str | None:
    """The first key repeated within one object of `document` (JSON that has already parsed),
    or None. A first pass reads only its skeleton (numeric arrays emptied), which is cheap even
    for large data; since emptying could also touch a key such as "x[1]", a repeat found there
    is confirmed on the whole document. Raises ValueError (or RecursionError) when the whole
    document cannot be read by Python's parser."""
    try:
        json.loads(_NUMERIC_ARRAY.sub(b"[]", document), object_pairs_hook=_unique_keys)
        return None
    except _Repeated:
        pass
    except (ValueError, RecursionError):  # not expected of a document that parsed: read it all
        pass
    try:
        json.loads(document, object_pairs_hook=_unique_keys)
    except _Repeated as exc:
        return str(exc.args[0])
    return None
