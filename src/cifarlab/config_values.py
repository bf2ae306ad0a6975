"""How values reach `cifarlab.config.TrainConfig`: number types that refuse YAML's true/false,
command-line strings read as YAML, and pydantic's errors as one line in cifarlab's style (the key,
the value, what is allowed, a close choice). Free of torch, like the config."""
from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BeforeValidator, ValidationError


def _not_bool(value):
    if isinstance(value, bool):  # YAML's true is not the number 1
        raise ValueError("expected a number, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


def _options(annotation) -> tuple:
    return get_args(annotation) if get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)


def text_typed(annotation) -> bool:
    """Whether a field of this annotation holds text (``str``, a ``Literal`` of strings, or either or None)."""
    return any(t is str or (get_origin(t) is Literal and isinstance(get_args(t)[0], str)) for t in _options(annotation))


def parsed(annotation, key: str, value: Any, source: str, error: type[Exception]) -> Any:
    """A command-line string as YAML reads it (``10``, ``0.1``, ``true``, ``null``, ``[[0, 24]]``) unless the
    field holds text; ``None`` is read as null. Other values are returned as they are.

    Raises:
        error: (``ConfigError``) a string YAML cannot read.
    """
    if not isinstance(value, str) or text_typed(annotation):
        return value
    if value in ("None", "none"):
        return None
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise error(f"Bad value {value!r} for {key} in {source}: not readable as YAML ({e.problem}).") from None


def one_line(error: ValidationError, fields: dict, source: str) -> str:
    """pydantic's first error as one line: the key, the value, what is allowed and, for a choice, the
    closest one (``fields``: the model's ``model_fields``)."""
    e = error.errors()[0]
    key, value = ".".join(map(str, e["loc"])) or "config", e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    choices = [str(c) for c in get_args(fields[e["loc"][0]].annotation)] if e["loc"] and e["loc"][0] in fields else []
    close = difflib.get_close_matches(str(value), choices, n=1) if e["type"] == "literal_error" else []
    return f"Bad value {value!r} for {key} in {source}: {msg}." + (f" Did you mean {close[0]}?" if close else "")
