"""The documentation of every `TrainConfig` key, read from the comments of its
field definitions (one source: the help of ``cifarlab train --help`` and ``cifarlab config keys``
cannot drift from the config). Free of torch, like `cifarlab.config`."""
from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, fields

from .config import TrainConfig

_FIELD = re.compile(r"^    (\w+): ([^=]+?) = (.+?)(?:\s+# (.*))?$")
_MORE = re.compile(r"^\s{8,}# (.*)$")      # a comment line continuing the field above
_SECTION = re.compile(r"^    # --- (.*)$")


@dataclass(frozen=True)
class KeyDoc:
    """One config key: name, type (as annotated), default (the dataclass's), help text, section."""
    name: str
    type: str
    default: object
    help: str
    section: str


@functools.lru_cache(maxsize=1)
def config_keys() -> tuple[KeyDoc, ...]:
    """Every `TrainConfig` key in definition order, with the help its source comment gives
    (read from the source once per process: the parser asks for it several times).

    Raises:
        RuntimeError: a field has no comment (a developer error the test suite catches).
    """
    docs, section, last = {}, "", None
    for line in inspect.getsource(TrainConfig).splitlines():
        if m := _SECTION.match(line):
            section, last = m.group(1).strip(), None
        elif m := _FIELD.match(line):
            last = m.group(1)
            docs[last] = [m.group(2).strip(), (m.group(4) or "").strip(), section]
        elif last and (m := _MORE.match(line)):
            docs[last][1] += " " + m.group(1).strip()
        elif line.strip():
            last = None
    defaults = TrainConfig()
    out = []
    for f in fields(TrainConfig):
        typ, text, sec = docs.get(f.name, ("", "", ""))
        if not text:
            raise RuntimeError(f"TrainConfig.{f.name} has no comment documenting it")
        out.append(KeyDoc(f.name, typ, getattr(defaults, f.name), text, sec))
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
