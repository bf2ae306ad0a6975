"""The documentation of every `TrainConfig` key: its type, default and description as the
model declares them (one source: the help of ``cifarlab train --help`` and ``cifarlab config keys``
cannot drift from the config). Free of torch, like `cifarlab.config`."""
from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Literal, get_args, get_origin

from .config import SECTIONS, TrainConfig


@dataclass(frozen=True)
class KeyDoc:
    """One config key: name, type (as text), default, help text, section, and its choices (or None)."""
    name: str
    type: str
    default: object
    help: str
    section: str
    choices: tuple | None = None


def type_text(annotation) -> str:
    """``int``, ``float | None``, ``linear | cosine`` (a choice), ... for an annotation."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in get_args(annotation))
    if get_origin(annotation) is Literal:
        return " | ".join(map(str, get_args(annotation)))
    if get_origin(annotation) is typing.Annotated:
        return type_text(get_args(annotation)[0])
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def choices_of(annotation) -> tuple | None:
    """The allowed values of a ``Literal`` field (alone or with None), else None."""
    options = get_args(annotation) if get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)
    literal = [a for a in options if get_origin(a) is Literal]
    return get_args(literal[0]) if literal else None


@functools.lru_cache(maxsize=1)
def config_keys() -> tuple[KeyDoc, ...]:
    """Every `TrainConfig` key in definition order.

    Raises:
        RuntimeError: a field has no description (a developer error the test suite catches).
    """
    defaults, out, section = TrainConfig(), [], ""
    for name, f in TrainConfig.model_fields.items():
        if not f.description:
            raise RuntimeError(f"TrainConfig.{name} has no description")
        section = SECTIONS.get(name, section)
        out.append(KeyDoc(name, type_text(f.annotation), getattr(defaults, name), f.description, section,
                          choices_of(f.annotation)))
    return tuple(out)


def keys_table() -> str:
    """Plain text: one block per section, ``key (type, default X): help`` per key."""
    lines, section = [], None
    for k in config_keys():
        if k.section != section:
            section = k.section
            lines.append(f"\n{section}:")
        lines.append(f"  {k.name} ({k.type}, default {k.default!r})\n      {k.help}")
    return "\n".join(lines).lstrip("\n")
