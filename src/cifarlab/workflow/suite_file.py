"""Suite files: a YAML file of runs (model x strategy x hyperparameters sharing defaults), parsed
and validated here; `.suite` trains, compares, ensembles and reports them. Also
`resolve_runs`: the run directories that paths on a command line name.

Format (every run key is a `TrainConfig` key; see ``suites/*.yaml``)::

    name: cifar10-ensemble          # default: the file's stem
    out: runs/cifar10-ensemble      # default: runs/<name>
    defaults: {dataset: cifar10}    # config keys shared by every run
    runs:
      - name: airbench94            # the run directory's name, unique in the suite
        seeds: [0, 1, 2]            # optional: one run per seed, named airbench94-s0 ...; 3 = [0, 1, 2]
      - name: resnet18-ft
        model: resnet18
        strategy: fine-tune
    ensemble: {methods: [uniform, greedy], min_val_acc: 90, per_architecture: true}
    report: true

``ensemble.runs`` (optional) restricts the ensemble to some runs: run names (``airbench94-s1``)
or entry names, which stand for all of an entry's seeds (``airbench94``). Without it, every
complete run of the suite is a candidate.

Each run's config is resolved by `cifarlab.recipes.resolve_config`: the recipe for its
dataset and model, then ``defaults`` and the run's own keys (the file level), then command-line
overrides. A run whose directory is
complete with the same config is skipped; an interrupted one is resumed; a finished one whose
config has since changed is an error (delete it or rename the entry).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError, TrainConfig
from ..evaluation.ensemble import METHODS
from ..models import UnknownModelError, model_kind
from ..recipes import resolve_config
from ..runs import CONFIG_FILE, RunDirError

SUITE_KEYS = {"name": "suite name", "description": "free text", "out": "output folder",
              "defaults": "config keys for every run", "runs": "list of runs", "ensemble": "ensemble settings",
              "report": "write report.html (true/false)"}
RUN_KEYS = {"name", "seeds", "description"}
ENSEMBLE_KEYS = {"methods", "min_val_acc", "per_architecture", "runs"}


class SuiteError(ValueError):
    """A suite file is invalid; the message gives the file, the line and the valid choices."""


@dataclass
class SuiteRun:
    name: str
    config: TrainConfig
    line: int


@dataclass
class Suite:
    """A parsed, validated suite."""
    name: str
    path: Path
    out: Path
    runs: list[SuiteRun]
    ensemble: dict | None = None
    report: bool = True
    description: str = ""

    def run_dir(self, run: SuiteRun) -> Path:
        return self.out / run.name


def _line_map(node, path=(), out=None) -> dict:
    """(key, key, ...) / index paths of a composed YAML node -> 1-based line numbers."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            _line_map(v, path + (k.value,), out)
            out[path + (k.value,)] = k.start_mark.line + 1  # a key's own line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (i,), out)
    return out


def _did_you_mean(key, valid) -> str:
    """`` Did you mean a, b?`` for up to three close matches of ``key`` in ``valid``, else ``""``."""
    close = difflib.get_close_matches(str(key), sorted(valid), n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _unknown(kind: str, key: str, valid, where: str) -> SuiteError:
    return SuiteError(f"{where}: unknown {kind} {key!r}.{_did_you_mean(key, valid)} "
                      f"Valid keys: {', '.join(sorted(valid))}.")


def _check_model(name: str, where: str) -> None:
    try:
        model_kind(name)
    except UnknownModelError as e:
        raise SuiteError(f"{where}: {e}") from None


def load_suite(path, overrides: dict | None = None) -> Suite:
    """Parse and validate a suite file; every run's config is resolved and validated.

    Args:
        overrides: config keys applied to every run last (e.g. ``{"data_dir": ...}``).

    Raises:
        SuiteError: unreadable YAML, unknown keys or models, bad values (with line numbers).
    """
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path} is a folder, not a suite file. 'cifarlab compare SUITE.yaml' trains and compares "
                         f"the runs a suite lists; for runs already trained: cifarlab report {path} --out report.html, "
                         f"or cifarlab ensemble {path}")
    try:
        text = path.read_text()
    except OSError as e:
        raise SuiteError(f"cannot read suite file {path}: {e.strerror}") from None
    try:
        data, node = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as e:
        raise SuiteError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise SuiteError(f"{path}: a suite is a mapping with a non-empty 'runs' list (see suites/*.yaml).")
    lines = _line_map(node)
    at = lambda *p: f"{path}:{lines.get(p, lines.get(p[:-1], 1))}"
    for k in data:
        if k not in SUITE_KEYS:
            raise _unknown("suite key", k, SUITE_KEYS, at(k))
    config_keys = set(TrainConfig.model_fields)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SuiteError(f"{at('defaults')}: 'defaults' must be a mapping of config keys.")
    for k in defaults:
        if k not in config_keys:
            raise _unknown("config key", k, config_keys, at("defaults", k))
    runs, seen, by_entry = [], set(), {}
    for i, entry in enumerate(data["runs"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise SuiteError(f"{at('runs', i)}: each run is a mapping with a 'name'.")
        for k in entry:
            if k not in config_keys | RUN_KEYS:
                raise _unknown("run key", k, config_keys | RUN_KEYS, at("runs", i, k))
        values = {**defaults, **{k: v for k, v in entry.items() if k not in RUN_KEYS}}
        model = values.get("model")
        if model is not None:
            _check_model(str(model), at("runs", i, "model") if "model" in entry else at("defaults", "model"))
        seeds = entry.get("seeds")
        if isinstance(seeds, int) and not isinstance(seeds, bool):  # seeds: 3 stands for [0, 1, 2]
            if seeds < 1:
                raise SuiteError(f"{at('runs', i, 'seeds')}: seeds is a count >= 1 or a list of seeds (got {seeds}).")
            seeds = list(range(seeds))
        elif seeds is not None and not (isinstance(seeds, list) and all(isinstance(x, int) for x in seeds)):
            raise SuiteError(f"{at('runs', i, 'seeds')}: seeds is a count (3: seeds 0, 1, 2) or a list such as [0, 1, 2].")
        names = ([(f"{entry['name']}-s{s}", s) for s in seeds] if seeds is not None else [(str(entry["name"]), None)])
        by_entry[str(entry["name"])] = [n for n, _ in names]
        for name, seed in names:
            if name in seen:
                raise SuiteError(f"{at('runs', i, 'name')}: run name {name!r} is used twice.")
            seen.add(name)
            v = dict(values, **({"seed": seed} if seed is not None else {}))
            try:
                cfg = resolve_config(v, overrides, source=f"{path} run {name}")
            except ConfigError as e:
                raise SuiteError(f"{at('runs', i)} (run {name}): {e}") from None
            runs.append(SuiteRun(name, cfg, lines.get(("runs", i), 1)))
    ens = data.get("ensemble")
    if ens is not None:
        if not isinstance(ens, dict):
            raise SuiteError(f"{at('ensemble')}: 'ensemble' must be a mapping ({', '.join(sorted(ENSEMBLE_KEYS))}).")
        for k in ens:
            if k not in ENSEMBLE_KEYS:
                raise _unknown("ensemble key", k, ENSEMBLE_KEYS, at("ensemble", k))
        for m in ens.get("methods", ["uniform"]):
            if m not in METHODS:
                raise SuiteError(f"{at('ensemble', 'methods')}: unknown method {m!r}; choose from {', '.join(METHODS)}.")
        chosen = []
        for r in ens.get("runs", []):
            if r in seen:
                chosen.append(r)
            elif r in by_entry:  # an entry's name stands for all of its seeds
                chosen.extend(by_entry[r])
            else:
                raise SuiteError(f"{at('ensemble', 'runs')}: no run or entry named {r!r} in this suite."
                                 f"{_did_you_mean(r, seen | set(by_entry))}")
        if "runs" in ens:
            ens = dict(ens, runs=list(dict.fromkeys(chosen)))
    name = str(data.get("name", path.stem))
    return Suite(name, path, Path(data.get("out", Path("runs") / name)), runs, ens, bool(data.get("report", True)),
                 str(data.get("description", "")))


def resolve_runs(paths) -> list[Path]:
    """Run directories named by ``paths``: a run directory (or `Run`), a folder
    of run directories (a suite's output), or a suite YAML file (its output folder, in the suite's order).

    Raises:
        RunDirError: a path that is none of these.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix in (".yaml", ".yml"):
            suite = load_suite(p)
            out += [suite.run_dir(r) for r in suite.runs if suite.run_dir(r).is_dir()]
        elif (p / CONFIG_FILE).is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(d for d in p.iterdir() if (d / CONFIG_FILE).is_file())
            if not found:
                raise RunDirError(f"{p} holds no run directories (folders with config.yaml).")
            out += found
        else:
            raise RunDirError(f"{p} is not a run directory, a folder of runs or a suite file.")
    if not out:
        raise RunDirError("no runs to report.")
    return list(dict.fromkeys(out))
