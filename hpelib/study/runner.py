"""``run_study``: load, plan, execute (or continue) a study, pool k-fold settings, summarise, report."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import yaml

from ..io import output_folder_problem, read_json, write_json, write_text
from ..signals import exit_status, signal_name, stop_on_signals
from ..runs import CHECKPOINT, FAILED, HISTORY, LOG, METRICS, UNLEARNED_RATIO, RunFolder, unlearned_keys
from .execute import (RunFolderHeld, damage, error_record, failed_outside_notebook, finished_unobserved,
                      is_complete, prepare_folder, write_meta)
from .executors import LocalExecutor, SlurmOptions, SubmititExecutor
from .lock import StudyLock
from .plan import SELECT_PREFIX, select
from .pool import pool_folds
from .scheduler import DONE, Scheduler
from .schema import REPO_ROOT, StudyError, load_study
from .selection import describe, plan_study, write_selection

__all__ = ["run_study", "main"]


def _where(err: dict) -> str:
    if err.get("cell_index") is None:
        return "notebook"
    ec = f" In [{err['exec_count']}]" if err.get("exec_count") else ""
    return f"cell {err['cell_index']}{ec}"


INTERRUPTED = "interrupted (resumes from its checkpoint)"


def _failure_line(rid: str, err: dict, limit: int) -> str:
    return f"{rid}: {_where(err)}: {err['ename']}: {err['evalue'][:limit]}"


def run_study(study_path, out=None, jobs: int | None = None, dry_run: bool = False, only: list[str] | None = None,
              force: bool = False, report: bool = True, gpus: str | None = None, echo=print,
              slurm: SlurmOptions | None = None, report_out=None, refuse_damaged: bool = False) -> int:
    """Run (or continue) a study; returns the exit status (0: every selected run complete, 130: interrupted).

    Each run executes in a child process (``jobs`` at a time, default 1), or,
    with ``slurm``, as a SLURM job (``jobs``: jobs in the queue at once, default
    no bound; see :mod:`hpelib.study.executors`). The results folder is locked
    while the study runs (:class:`~hpelib.study.lock.StudyLock`): a second runner
    on the same folder stops with an error naming the holder. ``report_out``:
    where the report goes (default ``<out>/report``); a finished study on
    storage this process cannot write (a read-only mount) is reported there
    without touching ``out``. A finished run whose files no longer match its
    record (:func:`~hpelib.study.execute.damage`) is trained again, or, with
    ``refuse_damaged``, nothing runs: one ``DAMAGED`` line per such run and a
    :class:`StudyError`.
    """
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise StudyError(f"--jobs must be an integer >= 1, got {jobs!r}")
    study = load_study(study_path)
    out = Path(out if out is not None else REPO_ROOT / "results" / study["name"]).resolve()
    report_out = None if report_out is None else Path(report_out).resolve()
    if report_out is not None:
        _check_out(report_out, "--report-out")
    out_problem = output_folder_problem(out)
    planned, selection = plan_study(study, out)
    for variant, why in study["_skipped"].items():
        echo(f"SKIPPED {variant} (optional): {why}")
    for line in describe(selection):
        echo(line)
    runs = select(planned, only)
    if only and not runs:
        raise StudyError(f"{study['_file']}: no run id matches --only {only} (see --dry-run for the ids)")
    for nb in sorted({r.notebook for r in runs}):
        if not nb.is_file():
            raise StudyError(f"{study['_file']}: notebook {nb} does not exist (set 'notebooks' in the study file)")
    if out_problem:
        if report_out is None or force or not all(is_complete(r, out) for r in planned):
            _check_out(out, "--out")
        echo(f"study {study['name']}: every run is complete in {out}, which cannot be written ({out_problem}); "
             f"reporting into {report_out}")
        return 0 if dry_run or not report else _report(study, out, planned, echo, report_out)
    _check_data_folders(study)
    if dry_run:
        done = {r.run_id for r in runs if not force and is_complete(r, out)}
        echo(f"study {study['name']}: {len(runs)} runs ({len(done)} complete, {len(runs) - len(done)} to run) -> {out}")
        for r in runs:
            dep = f"  <- {', '.join(r.deps)}" if r.deps else ""
            problem = None if force or r.run_id in done else damage(r, out)
            state = "complete" if r.run_id in done else "damaged" if problem else "run"
            echo(f"  [{state:8s}] {r.run_id}{dep}" + (f"  ({problem})" if problem else ""))
        return 0
    with StudyLock(out, study["_file"]) as lock:
        if lock.previous:
            echo(f"note: taking over {out} from a runner that is no longer running "
                 f"(pid {lock.previous.get('pid')} on {lock.previous.get('host')})")
        if slurm is None:
            slots, executor = jobs or 1, LocalExecutor(jobs or 1, gpus, study.get("timeout_s"))
        else:
            slots, executor = jobs or len(runs), SubmititExecutor(out, slurm, study.get("timeout_s"))
        try:
            with stop_on_signals():
                status = _execute(study, out, runs, executor, slots, force, echo, refuse_damaged)
                if selection:  # validation runs done now: the chosen variants' runs follow in the same command
                    pending = any(not rec.get("chosen") for rec in selection.values())
                    planned, selection = plan_study(study, out)
                    write_selection(out, selection)
                    if pending and any(rec.get("chosen") for rec in selection.values()):
                        for line in describe(selection):
                            echo(line)
                        runs = select(planned, only)
                        status = _execute(study, out, runs, executor, slots, force, echo, refuse_damaged)
        except KeyboardInterrupt as e:
            summary = read_json(out / "study_summary.json")["runs"]
            complete = sum(s["status"] in DONE for s in summary.values())
            stopped = sum(s["status"] == INTERRUPTED for s in summary.values())
            echo(f"interrupted by {signal_name(e)}: {complete} of {len(runs)} runs complete (kept), "
                 f"{stopped} stopped; {executor.interrupt_note()}")
            return exit_status(e)
        rc = _summarise(study, out, status, echo)
        if report and study.get("report", True) and any(status[r.run_id]["status"] in DONE
                                                         for r in runs if r.kind == "train"):
            rc = max(rc, _report(study, out, planned, echo, report_out))
    return rc


def _check_data_folders(study: dict) -> None:
    """The folders the runs will write into besides ``--out`` (crop caches, the rendered synthetic set) must be
    writable: one StudyError naming the first that is not, and what moves it."""
    from ..data import DEFAULT_ROOTS

    data = study["data"]
    specs = [("data.pretrain", data.get("pretrain")), ("data.train", data.get("train"))]
    specs += [(f"data.test.{name}", spec) for name, spec in (data.get("test") or {}).items()]
    for where, spec in specs:
        if not isinstance(spec, dict):
            continue
        folders = [("cache_dir", spec.get("cache_dir"), "set HPELIB_CACHE or cache_dir to a folder you can write to")]
        if spec.get("name") == "synthetic":
            folders.append(("root", spec.get("root") or DEFAULT_ROOTS["synthetic"],
                            "the synthetic set is rendered there: set root to a folder you can write to"))
        for key, folder, fix in folders:
            problem = folder and output_folder_problem(folder)
            if problem:
                raise StudyError(f"{study['_file']}: {where}.{key}: {folder} {problem}: {fix}")


def _check_out(out: Path, option: str) -> None:
    """A folder this process can create and write into, or one StudyError line saying why not."""
    problem = output_folder_problem(out)
    if problem:
        raise StudyError(f"{option} {out} {problem}: pass a folder you can write to")


def _report(study: dict, out: Path, planned, echo, report_out: Path | None = None) -> int:
    """Build the report of the study's complete runs (whole study, not only ``--only``); 1 if it fails.

    A run whose folder holds results made with other settings (the study changed
    and the run has not run again) is left out, and said so.
    """
    settings: dict[str, list] = {}  # a report row's folder -> its runs (the folds of a k-fold setting)
    for r in planned:  # pre-training runs too: the report knows them and leaves them out silently
        if not r.run_id.startswith(SELECT_PREFIX):  # validation runs of select: (selection.json), not rows
            settings.setdefault(r.group or r.run_id, []).append(r)
    current = sorted(rid for rid, rs in settings.items() if all(is_complete(r, out) for r in rs))
    stale = sorted(rid for rid in settings if rid not in current and (out / rid / METRICS).is_file())
    if stale:
        echo(f"left out of the report: {len(stale)} run(s) whose results were made with other settings than the "
             f"study's (run the study again to update them): {', '.join(stale[:5])}" + (" ..." if len(stale) > 5 else ""))
    why_not = {rid: _why_not_reported(rs, out, rid in stale) for rid, rs in settings.items() if rid not in current}
    try:
        from ..report import build_report

        where = report_out or out / "report"
        build_report(out, where, runs=current, why_not=why_not, reference=study.get("reference_baseline"))
        echo(f"report: {where}")
        return 0
    except Exception as e:
        echo(f"report failed: {type(e).__name__}: {e}")
        return 1


def _why_not_reported(runs, out: Path, stale: bool) -> str:
    """Why a setting of the study (its runs: one, or the folds of a k-fold setting) is not in the report."""
    for r in runs:
        failed = r.folder(out) / FAILED
        if failed.is_file():
            try:
                err = read_json(failed)
                return f"FAILED: {_failure_line(r.run_id, err, 200)}"
            except (OSError, ValueError, KeyError, TypeError):
                return f"FAILED: see {failed}"
    failed_deps = sorted({d for r in runs for d in r.deps if (out / d / FAILED).is_file()})
    if failed_deps:
        return f"not run: the run it depends on failed ({', '.join(failed_deps)})"
    if stale:
        return "made with other settings than the study's: run the study again to update it"
    return "not run yet, or interrupted: run the study again to finish it"


class _Refused:
    """A run that could not start (its folder is held by a living process): it fails at once with the reason."""

    def __init__(self, error: Exception):
        self.result = failed_outside_notebook(type(error).__name__, str(error))

    def poll(self) -> dict:
        return self.result

    def stop(self) -> None:
        pass


def _execute(study: dict, out: Path, runs, executor, jobs: int, force: bool, echo=print,
             refuse_damaged: bool = False) -> dict:
    """Run what is not complete, ``jobs`` at a time; pool k-fold settings; returns each run's status.

    Writes the summary files. A run whose job an earlier runner submitted is
    waited for, not started again (``executor.attach``); such runs go first.
    """
    from tqdm.auto import tqdm

    done = {r.run_id for r in runs if not force and is_complete(r, out)}
    damaged = 0
    for r in runs:
        problem = None if force or r.run_id in done else damage(r, out)  # a complete run was checked just now
        if problem:
            damaged += 1
            echo(f"DAMAGED {r.run_id}: {problem}" + ("" if refuse_damaged else "; training it again"))
    if damaged and refuse_damaged:
        raise StudyError(f"{damaged} finished run(s) under {out} no longer match their record (DAMAGED lines "
                         "above) and --refuse-damaged is set: nothing was run; put the files back, or run without "
                         "--refuse-damaged to train those runs again")
    for r in runs:
        if r.run_id in done and finished_unobserved(r, out):
            write_meta(r, out, complete=True)
            echo(f"COLLECTED {r.run_id}: finished while no runner watched it; its result is kept")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "study.yaml", yaml.safe_dump({k: v for k, v in study.items() if not k.startswith("_")},
                                                  sort_keys=False))
    failures: list[dict] = []
    bar = tqdm(total=len(runs) - len(done), desc=f"study {study['name']}", unit="run", dynamic_ncols=True)
    progress = _EpochProgress(out)
    executor.echo = bar.write

    def start(run, gpu):
        attached = executor.attach(run, force, bar.write)
        if attached is not None:
            return attached
        try:
            folder = prepare_folder(run, out, force)
        except RunFolderHeld as e:
            return _Refused(e)
        resumed = progress.finished_epochs(run)
        if resumed:
            bar.write(f"RESUME {run.run_id}: from epoch {resumed}/{run.spec.train.epochs} (its checkpoint.pt)")
        return executor.start(run, folder, gpu)

    def on_finish(run, result):
        if result["ok"]:
            write_meta(run, out, complete=True, seconds=round(result["seconds"], 1))
            _warn_unlearned(run, out, bar.write)
            diverged = RunFolder(run.folder(out)).divergence() if run.kind == "pretrain" else None
            if diverged:
                bar.write(f"DIVERGED? {run.run_id}: {diverged}; its fine-tunes start from these weights "
                          f"(listed in the report's warnings.md)")
        else:
            err = dict(result["error"], run=run.run_id, notebook=str(run.folder(out) / run.notebook.name))
            err["evalue"] = str(err.get("evalue", "")) + _dependency_hint(study, out, run, err)
            failures.append(err)
            write_json(run.folder(out) / FAILED, err)
            bar.write("FAILED " + _failure_line(run.run_id, err, 300))
        bar.update(1)

    def on_skip(run, bad):
        bar.write(f"SKIPPED {run.run_id}: depends on failed {', '.join(bad)}")
        bar.update(1)

    def on_tick(running):
        text = progress.describe(running)[:100]
        if text != bar.postfix:  # redraw only when something changed
            bar.set_postfix_str(text)

    ordered = sorted(runs, key=lambda r: not executor.submitted(r))  # the scheduler still waits for dependencies
    scheduler = Scheduler(ordered, done, jobs, executor.gpus, start, on_finish, on_skip)
    try:
        status = scheduler.run(poll_s=executor.poll_s, on_tick=on_tick)
    finally:
        bar.close()
        status = scheduler.status
        for rid, (_, execution, _) in scheduler.running.items():
            status[rid] = {"status": INTERRUPTED if hasattr(execution, "wait_stopped") else "left running (SLURM job)"}
        for r in runs:
            status.setdefault(r.run_id, {"status": "not run (interrupted)"})
        write_json(out / "study_summary.json", {"study": study["_file"], "out": str(out), "runs": status})
        write_json(out / "failures.json", failures)
    _pool(out, runs, status, failures)
    return status


class _EpochProgress:
    """Where the running runs are, from the last line of their ``train.log`` (``epoch k/N ...``)."""

    def __init__(self, out: Path):
        self.out = out
        self._seen: dict[str, tuple[float, str]] = {}  # run id -> (log mtime, epoch text)

    def describe(self, runs) -> str:
        return ", ".join(f"{r.run_id} {self._epoch(r)}".rstrip() for r in runs)

    def _epoch(self, run) -> str:
        log = run.folder(self.out) / LOG
        try:
            mtime = log.stat().st_mtime
        except OSError:
            return ""
        if run.run_id not in self._seen or self._seen[run.run_id][0] != mtime:
            lines = [line for line in log.read_text().splitlines() if line.startswith("epoch ")]
            self._seen[run.run_id] = (mtime, lines[-1].split(":")[0].split()[1] if lines else "")
        return f"epoch {self._seen[run.run_id][1]}" if self._seen[run.run_id][1] else ""

    def finished_epochs(self, run) -> int:
        """Epochs a run about to start has already finished (it resumes from its checkpoint), else 0."""
        folder = run.folder(self.out)
        if not (folder / CHECKPOINT).is_file() or not (folder / HISTORY).is_file():
            return 0
        try:
            return len(read_json(folder / HISTORY).get("epochs", []))
        except (OSError, ValueError):
            return 0


def _dependency_hint(study: dict, out: Path, run, err: dict) -> str:
    """When a run's error names a file of a run it depends on (a pre-training's ``model.pt``), the command that
    trains that run again."""
    for dep in run.deps:
        if str(out / dep) + os.sep in str(err.get("evalue", "")):
            return (f" [the file is {dep}'s: train it again with python -m hpelib.study {study['_file']} "
                    f"--out {out} --force --only {dep}]")
    return ""


def _warn_unlearned(run, out: Path, write) -> None:
    """A line when a finished run is not clearly better than predicting the median training pose."""
    if run.kind != "train":
        return
    folder = RunFolder(run.folder(out))
    try:
        blocks = folder.metric_blocks(folder.read_config().test_set)
    except (OSError, ValueError):
        return
    found = [(test_set, block, unlearned_keys(block)) for test_set, block in blocks]
    parts = [f"[{ts}] " + ", ".join(f"{k} {b[k]:.1f} vs {b[f'constant_{k}']:.1f}" for k in bad)
             for ts, b, bad in found if bad]
    if parts:
        write(f"UNLEARNED {run.run_id}: error not below {UNLEARNED_RATIO:g} x the constant predictor's "
              f"({'; '.join(parts)}); marked in metrics.json and the report")


def _pool(out: Path, runs, status: dict, failures: list[dict]) -> None:
    """Pool every k-fold setting whose folds are all complete; remove a stale pooled result otherwise."""
    groups: dict[str, list] = {}
    for r in runs:
        if r.group:
            groups.setdefault(r.group, []).append(r)
    for group, folds in groups.items():
        if all(status[r.run_id]["status"] in DONE for r in folds):
            try:
                pool_folds(out, group, folds)
            except Exception as e:
                err = dict(error_record(type(e).__name__, f"pooling the folds failed: {e}"), run=group, notebook=None)
                failures.append(err)
                status[group] = {"status": "failed", "error": err}
                write_json(out / "failures.json", failures)
        else:
            (out / group / METRICS).unlink(missing_ok=True)


def _summarise(study: dict, out: Path, status: dict, echo) -> int:
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    echo(f"study {study['name']}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" -> {out}")
    bad = [rid for rid, s in status.items() if s["status"] not in DONE]
    for rid in bad:
        s = status[rid]
        if s["status"] == "failed":
            e = s["error"]
            echo("  FAILED  " + _failure_line(rid, e, 200) + (f"  ({e['notebook']})" if e.get("notebook") else ""))
        else:
            echo(f"  {s['status'].upper()}  {rid}")
    return 1 if bad else 0


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def main(argv: list[str] | None = None) -> int:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python -m hpelib.study", description=doc.split("\n\n")[0])
    p.add_argument("study", help="study YAML file (see docs/STUDY.md)")
    p.add_argument("--out", help="output folder (default: results/<study name>)")
    p.add_argument("--jobs", type=_positive_int,
                   help="runs executed in parallel, one GPU each when GPUs are present (default 1); "
                        "with --executor slurm: jobs in the queue at once (default: no bound)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are complete; run nothing")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only ids matching this glob or substring (repeatable); their pre-training runs are added")
    p.add_argument("--force", action="store_true", help="re-run selected runs even when complete")
    p.add_argument("--no-report", action="store_true", help="do not build <out>/report at the end")
    p.add_argument("--refuse-damaged", action="store_true",
                   help="stop (exit 2, nothing run) when a finished run's files no longer match its record, instead "
                        "of training it again")
    p.add_argument("--gpus", help="comma-separated GPU ids to share among --jobs workers (default: all visible)")
    p.add_argument("--report-out", metavar="DIR", help="write the report here instead of <out>/report (a finished "
                   "study on read-only storage is reported without writing into --out)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: child processes (default); slurm: one SLURM job per run, through submitit")
    slurm = p.add_argument_group("SLURM (--executor slurm; see docs/STUDY.md, 'On a SLURM cluster')")
    slurm.add_argument("--slurm-partition", metavar="P", help="partition (default: the cluster's default)")
    slurm.add_argument("--slurm-gpus-per-run", type=_non_negative_int, default=1, metavar="N",
                       help="GPUs of each job (1)")
    slurm.add_argument("--slurm-time-min", type=_positive_int, default=240, metavar="M",
                       help="time limit of each job in minutes (240)")
    slurm.add_argument("--slurm-warn-s", type=_positive_int, default=None, metavar="S",
                       help="seconds before the time limit at which a job saves its state and is requeued "
                            "(default: 90, at most a fifth of the limit)")
    slurm.add_argument("--slurm-max-requeues", type=_non_negative_int, default=20, metavar="N",
                       help="times a job may be requeued at its time limit, resuming each time (20)")
    slurm.add_argument("--slurm-cpus-per-run", type=_positive_int, default=8, metavar="N", help="CPUs of each job (8)")
    slurm.add_argument("--slurm-mem-gb", type=_positive_int, default=32, metavar="G", help="memory of each job (32)")
    slurm.add_argument("--slurm-account", metavar="A", help="account to charge")
    slurm.add_argument("--slurm-qos", metavar="Q", help="quality of service")
    slurm.add_argument("--slurm-setup", action="append", default=[], metavar="CMD",
                       help="shell line run in each job before the run, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local"), default="slurm",
                       help=argparse.SUPPRESS)  # local: submitit's local executor (tests)
    a = p.parse_args(argv)
    given = sorted(f"--{k.replace('_', '-')}" for k, v in vars(a).items()
                   if k.startswith("slurm_") and v != p.get_default(k))
    if a.executor == "local" and given:
        p.error(f"{', '.join(given)} need(s) --executor slurm")
    if a.executor == "slurm" and a.gpus:
        p.error("--gpus is for --executor local; a SLURM job gets its GPUs from SLURM (--slurm-gpus-per-run)")
    options = None if a.executor == "local" else SlurmOptions(
        **{f.name: getattr(a, f"slurm_{f.name}") for f in dataclasses.fields(SlurmOptions)})
    try:
        return run_study(a.study, a.out, jobs=a.jobs, dry_run=a.dry_run, only=a.only, force=a.force,
                         report=not a.no_report, gpus=a.gpus, slurm=options, report_out=a.report_out,
                         refuse_damaged=a.refuse_damaged)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the runner's own writes: a full disk (DiskFullError names the file), permissions
        where = f" ({e.filename})" if getattr(e, "filename", None) and str(e.filename) not in str(e) else ""
        print(f"error: {type(e).__name__}: {e}{where}; what is complete is kept: fix it and run the same command "
              "again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted before any run started; nothing was changed", file=sys.stderr)
        return 130
