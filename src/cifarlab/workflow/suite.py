"""Running a suite (`.suite_file` parses it): train every run not yet complete into one
folder, then compare, ensemble and report them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import config_diff
from ..files import lock_folder
from ..runs import RunDir, RunDirError
from .compare import comparison_rows
from .verdicts import tables_by_dataset, write_verdicts
from .ensemble import ensemble_runs
from .errors import USER_ERRORS
from .report import build_report
from .suite_file import Suite, SuiteError
from .train import train


@dataclass
class SuiteResult:
    """What `run_suite` did: runs completed (trained now or before), skipped as already
    complete, failed (name -> why); the comparison rows, the verdict tables (dataset -> rows of
    `verdict_table`), the ensemble result and the report's path."""
    suite: Suite
    completed: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    verdicts: dict[str, list[dict]] = field(default_factory=dict)
    ensemble: dict | None = None
    report: Path | None = None


def run_suite(suite: Suite, progress: bool = True, log=print) -> SuiteResult:
    """Train every run not yet complete (resuming interrupted ones), then compare, ensemble and
    report the complete ones into ``suite.out``.

    A run that fails (diverges, bad model input...) is recorded in ``result.failed`` and the
    suite goes on. Raises `SuiteError` when a finished run's saved config differs from
    the suite's, since comparing it would be comparing something else, and `FolderInUse`
    when another process is running the same suite (its output folder is locked meanwhile).
    """
    try:
        suite.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"Cannot write the suite's output folder {suite.out}: {e.strerror}.") from None
    with lock_folder(suite.out, f"compare {suite.path}"):
        return _run(suite, progress, log)


def _run(suite: Suite, progress, log) -> SuiteResult:
    result = SuiteResult(suite)
    for i, run in enumerate(suite.runs):
        rd = RunDir(suite.run_dir(run))
        cfg = run.config.update({"progress": progress})
        if rd.config_path.is_file():
            diff = config_diff(rd.load_config(), cfg)
            if diff:
                raise SuiteError(f"{rd.path} was trained with a different config than {suite.path} line {run.line} "
                                 f"now gives ({', '.join(diff)}). Delete that folder to retrain it, or rename "
                                 "the run in the suite.")
        tag = f"[{i + 1}/{len(suite.runs)}] {run.name}"
        if rd.is_complete():
            log(f"{tag}: complete, skipped")
            result.skipped.append(run.name)
            result.completed.append(rd.path)
            continue
        resume = rd.config_path.is_file()  # started before: go on from its last checkpoint (or its start)
        log(f"{tag}: {'resuming' if resume else 'training'} {cfg.model} ({cfg.strategy}, {cfg.epochs:g} epochs)")
        try:
            if resume:
                train(cfg, resume=rd.path)
            else:
                train(cfg, run_dir=rd.path)
            result.completed.append(rd.path)
        except USER_ERRORS as e:
            result.failed[run.name] = str(e)
            log(f"{tag}: failed: {e}")
    if not result.completed:
        return result
    result.rows = comparison_rows(result.completed, suite.out)
    result.verdicts = tables_by_dataset(result.completed)
    write_verdicts(result.verdicts, suite.out)
    if suite.ensemble is not None:
        chosen = suite.ensemble.get("runs")
        members = [p for p in result.completed if not chosen or p.name in chosen]
        if len(members) >= 2:
            result.ensemble = ensemble_runs(members, suite.ensemble.get("methods", ["uniform"]),
                                            suite.ensemble.get("min_val_acc"),
                                            bool(suite.ensemble.get("per_architecture", False)), out_dir=suite.out)
    if suite.report:
        result.report = build_report(result.completed, suite.out / "report.html", title=f"Suite {suite.name}",
                                     ensemble=result.ensemble)
    return result
