"""What text and free-form values must be before hpscale stores them: one rule for the API and
the CLI, so that SQLite and PostgreSQL accept the same inputs.

- Text (names, sources, forms, query and path values) holds no NUL character: PostgreSQL
  cannot store one, SQLite would, and a database must not decide what is valid. Nor a lone
  surrogate (``"\\ud800"`` parses from JSON but is no UTF-8).
- ``tags`` are a JSON object nested at most ``MAX_TAGS_DEPTH`` levels deep and at most
  ``MAX_TAGS_BYTES`` long as JSON, holding finite numbers only (JSON has no NaN or Infinity,
  and PostgreSQL's json type refuses them) and text as above, keys included.

Violations raise ``ValueError`` naming where, so pydantic reports the field (a 422 problem in
the API, ``file:line: field ...`` in the CLI).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

MAX_TAGS_DEPTH = 8  # the tags object itself is level 1
MAX_TAGS_BYTES = 16 * 1024  # as compact JSON, UTF-8
NO_NUL_PATTERN = "^[^\\u0000]*$"  # the text rule as the OpenAPI document states it


def text_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable text, or None when it is."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def check_text(value: Any) -> Any:
    """``value`` unchanged if it is acceptable text (or no text at all); else ``ValueError``."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
    return value


class TextRule:
    """Pydantic metadata: validate with ``check_text`` and state the rule in the JSON schema.

    Put it LAST in ``Annotated[str, Field(...), TEXT]``: length constraints before it stay
    native string checks (with their plain messages)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(check_text, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        js = handler(schema)
        js.setdefault("pattern", NO_NUL_PATTERN)
        return js


TEXT = TextRule()
Text = Annotated[str, TEXT]
"""A string that passes the text rule."""


def _json_integer(value: Any) -> Any:
    if isinstance(value, (bool, str)):  # JSON true / "3" is no integer (pydantic's lax mode takes both)
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def not_boolean(value: Any) -> Any:
    """``value`` unless it is true or false (which pydantic's lax mode takes for numbers)."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_allowed", "Input should not be a boolean")
    return value


INTEGER = BeforeValidator(_json_integer)
"""Pydantic metadata: an integer as JSON Schema counts one, ``3`` or ``3.0``, never ``true`` or
``"3"`` (pydantic's strict mode would refuse ``3.0``, which the OpenAPI ``integer`` allows). Put
it after any ``Field`` constraints, as ``TEXT``: they then stay in the JSON schema."""
JsonInt = Annotated[int, INTEGER]


def _where(path: list[str | int]) -> str:
    shown = "tags" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:6])
    return shown + (" ..." if len(path) > 6 else "")


def check_tags(tags: dict[str, Any] | None) -> dict[str, Any] | None:
    """``tags`` unchanged when they keep the rules of the module doc; else ``ValueError``
    naming the first offending place (``tags.a.b``). Walks iteratively: any depth is safe."""
    if tags is None:
        return None
    stack: list[tuple[Any, int, list[str | int]]] = [(tags, 1, [])]
    bound = 0  # an upper bound of the JSON size: most tags need no json.dumps to know they fit
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_TAGS_DEPTH:
                raise ValueError(f"nested deeper than {MAX_TAGS_DEPTH} levels (at {_where(path)})")
            bound += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"keys must be text (at {_where(path)})")
                problem = text_problem(key)
                if problem:
                    raise ValueError(f"key {key[:40]!r} {problem} (at {_where(path)})")
                bound += 6 * len(key) + 4  # each character at most 6 bytes (\u00XX), quotes, colon, comma
                stack.append((item, depth + 1, [*path, key]))
        elif isinstance(value, list):
            if depth > MAX_TAGS_DEPTH:
                raise ValueError(f"nested deeper than {MAX_TAGS_DEPTH} levels (at {_where(path)})")
            bound += 2 + len(value)
            stack.extend((item, depth + 1, [*path, i]) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise ValueError(f"{problem} (at {_where(path)})")
            bound += 6 * len(value) + 2
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"must hold finite numbers only, not {value} (at {_where(path)}): JSON has no NaN or Infinity")
            bound += 24
        elif isinstance(value, int):  # bool included
            bound += 24 if abs(value) < 10**20 else len(str(value))
        elif value is not None:
            raise ValueError(f"must hold JSON values only, not {type(value).__name__} (at {_where(path)})")
        else:
            bound += 4
    if bound > MAX_TAGS_BYTES:
        size = len(json.dumps(tags, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_TAGS_BYTES:
            raise ValueError(f"{size} bytes as JSON, more than the {MAX_TAGS_BYTES} allowed")
    return tags
