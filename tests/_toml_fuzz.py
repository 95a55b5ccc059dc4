"""Wrong-type fuzzing of TOML input files (tests/test_faults_inputs.py).

:func:`dump_toml` writes any parsed TOML document back as TOML text (every table inline, so
that any value, however nested, can be put anywhere); :func:`wrong_type_cases` enumerates, for
every key of a document (the first element of each array standing for the others), the
document with that value replaced by a value of each other TOML type (and by arrays nested
40 and 3000 levels deep).
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

#: Depth of the "deeply nested" values: one that the TOML reader parses (refused by nksim's
#: depth check, naming the key) and one that makes the reader itself give up (RecursionError).
DEPTHS = (40, 3000)


def nested(depth: int) -> Any:
    """An array nested ``depth`` levels deep around the integer 1."""
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


#: One value of each TOML type (name -> value).
SAMPLES: dict[str, Any] = {
    "integer": 3,
    "float": 2.5,
    "string": "x",
    "boolean": True,
    "array": [1, "a"],
    "table": {"zz_unknown": 1},
    "array of arrays": [[1]],
    "array of tables": [{"zz_unknown": 1}],
    "empty array": [],
}


def category(v: Any) -> str:
    """The TOML type of a parsed value (integers and floats are one category: numbers)."""
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Mapping):
        return "table"
    return "array"


def _val(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # JSON escapes are valid in TOML basic strings
    if isinstance(v, float):
        return "inf" if v == math.inf else "-inf" if v == -math.inf else "nan" if v != v else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_val(x)}" for k, x in v.items()) + "}"
    # iterative for deep nesting: the innermost value with its brackets around it
    depth = 0
    while isinstance(v, list) and len(v) == 1 and isinstance(v[0], list):
        v, depth = v[0], depth + 1
    return "[" * depth + "[" + ", ".join(_val(x) for x in v) + "]" + "]" * depth


def dump_toml(doc: Mapping[str, Any]) -> str:
    """``doc`` as TOML text: one ``key = value`` line per top-level key, tables inline."""
    return "".join(f"{json.dumps(str(k))} = {_val(v)}\n" for k, v in doc.items())


def key_text(path: tuple[Any, ...]) -> str:
    """``("events", 0, "kind")`` -> ``"events[0].kind"`` (the dotted key of nksim's messages)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list) and obj:
        yield from _paths(obj[0], prefix + (0,))  # the first element stands for the others


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    o = out
    for p in path[:-1]:
        o = o[p]
    o[path[-1]] = value
    return out


def wrong_type_cases(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, Any, bool]]:
    """``(key, label, document, wrong)`` for every key of ``doc`` and every sample value.

    ``wrong``: the sample's TOML type differs from the original value's (so the document must
    be refused, naming the key); otherwise it may be accepted or refused, but only with an
    NksimInputError.
    """
    for path in _paths(doc):
        o: Any = doc
        for p in path:
            o = o[p]
        for label, value in SAMPLES.items():
            yield key_text(path), label, _replace(doc, path, value), category(value) != category(o)
        for depth in DEPTHS:
            yield key_text(path), f"array nested {depth} deep", _replace(doc, path, nested(depth)), True
