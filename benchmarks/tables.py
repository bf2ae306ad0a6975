"""Write BENCHMARKS.md's tables from the flat result files under ``benchmarks/results/``.

Each table is one JSON file, ``benchmarks/results/NAME.json``, holding at least::

    {"command": "the command that reproduces it" (or a list of commands),
     "machine": "a key of machines.json" (or "per row": then each row names its machine),
     "date": "YYYY-MM-DD" (or a range),
     "columns": [["key", "heading"], ["key", "heading", ".2f"], ...],
     "rows": [{"key": value, ...}, ...]}

and may hold more (raw figures the table summarises). In BENCHMARKS.md a table sits between
``<!-- table NAME -->`` and ``<!-- /table -->``; everything else in the file is prose and is left
alone. A column's optional third item is a format spec for its numbers (``.2f``); a column whose
values are all numbers is right-aligned; a missing value prints as empty.

    python benchmarks/tables.py            # rewrite the tables in BENCHMARKS.md
    python benchmarks/tables.py --check    # exit 1, naming every table that differs from its file

``tests/test_benchmarks_doc.py`` runs the check, so BENCHMARKS.md cannot drift from the files.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "BENCHMARKS.md"
BLOCK = re.compile(r"<!-- table (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /table -->", re.S)


class TableError(ValueError):
    """A table file that is missing, unreadable or lacks a required key."""


def _cell(value, spec: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec and isinstance(value, (int, float)):
        return format(value, spec)
    return str(value).replace("|", "\\|")


def _numeric(values: list) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def load(name: str, results: Path = RESULTS) -> dict:
    """The table file ``results/NAME.json``.

    Raises:
        TableError: the file is missing, not JSON, or lacks command, machine, date, columns or rows.
    """
    path = results / f"{name}.json"
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise TableError(f"BENCHMARKS.md names table {name!r}, but {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise TableError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in ("command", "machine", "date", "columns", "rows") if k not in table]
    if missing:
        raise TableError(f"{path} lacks {', '.join(missing)}")
    return table


def render(name: str, table: dict, machines: dict | None = None) -> str:
    """The Markdown of one table: the grid, then the command, machine, date and file it comes from."""
    keys = [c[0] for c in table["columns"]]
    specs = [c[2] if len(c) > 2 else "" for c in table["columns"]]
    rows = table["rows"]
    for i, row in enumerate(rows):
        unknown = set(row) - set(keys)
        if unknown:
            raise TableError(f"{name}.json row {i} has keys not in its columns: {', '.join(sorted(unknown))}")
    align = ["---:" if _numeric([r.get(k) for r in rows]) else "---" for k in keys]
    lines = ["| " + " | ".join(c[1] for c in table["columns"]) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(k), f) for k, f in zip(keys, specs)) + " |" for r in rows]
    commands = table["command"] if isinstance(table["command"], list) else [table["command"]]
    machine = table["machine"]
    if machines is not None and machine != "per row":
        if machine not in machines:
            raise TableError(f"{name}.json names machine {machine!r}, which machines.json does not list")
    lines += ["", *(f"    {c}" for c in commands), ""]
    where = "the machine of each row" if machine == "per row" else f"machine `{machine}`"
    lines.append(f"Measured on {where}, {table['date']}. File: `benchmarks/results/{name}.json`.")
    return "\n".join(lines) + "\n"


def rendered(doc: str, results: Path = RESULTS) -> str:
    """``doc`` with every marked table replaced by what its file renders to."""
    machines = {r["id"]: r for r in load("machines", results)["rows"]} if (results / "machines.json").exists() else None

    def one(m: re.Match) -> str:
        name = m["name"]
        return f"<!-- table {name} -->\n{render(name, load(name, results), machines)}<!-- /table -->"
    return BLOCK.sub(one, doc)


def stale(doc: str, results: Path = RESULTS) -> list[str]:
    """The names of the tables in ``doc`` whose text differs from their file's rendering."""
    new = rendered(doc, results)
    old_blocks = {m["name"]: m["body"] for m in BLOCK.finditer(doc)}
    new_blocks = {m["name"]: m["body"] for m in BLOCK.finditer(new)}
    return [n for n in old_blocks if old_blocks[n] != new_blocks[n]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="report stale tables instead of rewriting them")
    args = ap.parse_args(argv)
    doc = DOC.read_text()
    try:
        names = stale(doc)
        if args.check:
            if names:
                print(f"BENCHMARKS.md differs from its files in: {', '.join(names)}. "
                      "Run: python benchmarks/tables.py", file=sys.stderr)
                return 1
            print(f"BENCHMARKS.md agrees with its {len(BLOCK.findall(doc))} table files.")
            return 0
        DOC.write_text(rendered(doc))
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rewrote {len(names)} table(s): {', '.join(names) or 'none changed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
