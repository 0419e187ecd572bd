"""The `lsb` command: list, run and reproduce experiments.

    lsb list
    lsb show NAME [--config quick|medium|full] [--set key=value ...]
    lsb run NAME [--config quick|medium|full] [--set key=value ...] [--out DIR] [--resume] [--force]
    lsb reproduce [--quick|--medium|--full] [--only PATTERN] [--force]

Bad input (unknown experiment, unknown --set key, ill-typed value, an unfinished run in the
way, a run directory in use, an unreadable data file or model path) prints one line
`lsb: error: ...`, exits with code 2 and writes nothing. A run that fails on an error the project
names (divergence, corrupt checkpoints, run files inconsistent with them, a full disk) prints one
line, is marked "failed" in its status.json and exits with code 1 (`lsb_jax.errors`).

`run` and `reproduce` keep the programs they compile in ~/.cache/lsb_jax/jax (`--compile-cache DIR|off`,
`train.hosts.use_compile_cache`), so running again loads them instead of compiling.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import traceback
from pathlib import Path

from lsb_jax import config as config_lib
from lsb_jax import experiments as exp_lib
from lsb_jax import report as report_lib
from lsb_jax import runner
from lsb_jax.errors import RunFailure, UsageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsb", description="Reproduce the lsb_jax experiments. The options below "
                                "(--runs, --cpu-devices, --compile-cache) go before the command: "
                                "lsb --runs DIR reproduce ...")
    p.add_argument("--runs", default=str(runner.DEFAULT_RUNS), help="root folder of run directories (default: runs)")
    p.add_argument("--cpu-devices", default=None, metavar="N|auto",
                   help="split the CPU into N JAX devices ('auto': one per core) so that vmapped ensembles "
                        "(sweeps, theory grids) split their members over the cores (default: JAX's one CPU device; "
                        "results can differ in the last bits with the split)")
    p.add_argument("--compile-cache", default=None, metavar="DIR|off",
                   help="keep compiled programs in DIR so that a run started again loads them instead of compiling "
                        "(default: $LSB_COMPILE_CACHE, else JAX_COMPILATION_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/lsb_jax/jax, ~/.cache/lsb_jax/jax when XDG_CACHE_HOME is unset; 'off': none)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list every experiment, the figure it reproduces and its cost")

    def add_config_args(sp):
        sp.add_argument("name", help="experiment name (`lsb list`)")
        sp.add_argument("--config", default="quick",
                        help="config name: quick (CPU), medium (CPU, more seeds; where `lsb list` shows one) or "
                             "full (paper scale)")
        sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (dotted keys for nested fields); repeatable")

    show = sub.add_parser("show", help="print the resolved config of an experiment")
    add_config_args(show)

    run = sub.add_parser("run", help="run one experiment")
    add_config_args(run)
    run.add_argument("--out", default=None, help="run directory (default: RUNS/NAME/CONFIG-HASH, RUNS from --runs)")
    run.add_argument("--resume", action="store_true", help="continue an unfinished run from its last checkpoint")
    run.add_argument("--force", action="store_true",
                     help="delete an existing run directory and start over (wins over --resume)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    rep = sub.add_parser("reproduce", help="run every experiment's quick, medium or full config and write a report",
                         description="Runs every experiment (or those of --only) and writes RUNS/report.md "
                                     "(report-medium.md, report-full.md): complete runs are reused, unfinished ones "
                                     "resumed.")
    mode = rep.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU-sized configs (default)")
    mode.add_argument("--medium", action="store_true",
                      help="medium configs where an experiment has one (CPU, seeds to decide its claims), else quick")
    mode.add_argument("--full", action="store_true", help="paper-scale configs (most need a GPU/TPU; `lsb list`)")
    rep.add_argument("--only", default=None, metavar="PATTERN", help="glob or substring of experiment names")
    rep.add_argument("--force", action="store_true", help="rerun even experiments that are up to date")
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def cmd_list(args) -> int:
    broken: dict[str, str] = {}
    exps = exp_lib.discover(broken=broken)
    rows = [("name", "reproduces", "quick", "medium", "full", "file")]
    for e in exps.values():
        medium = e.cost.get("medium", "?") if "medium" in e.configs else "-"
        rows.append((e.name, e.reproduces, e.cost.get("quick", "?"), medium, e.cost.get("full", "?"), e.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for f, msg in broken.items():
        print(f"BROKEN  {f}: {msg}")
    return 0


def cmd_show(args) -> int:
    _, cfg = runner.resolve(args.name, args.config, args.sets)
    print(json.dumps(config_lib.to_dict(cfg), indent=2))
    return 0


def cmd_run(args) -> int:
    exp, cfg = runner.resolve(args.name, args.config, args.sets)
    run_dir, results = runner.run_experiment(exp, cfg, args.config, out=args.out, runs_root=Path(args.runs),
                                             resume=args.resume, force=args.force, progress=not args.no_progress)
    print(f"{exp.name}: results in {run_dir}")
    for k, v in (results.get("headline") or {}).items():
        print(f"  {k}: {v}")
    return 0


def select(exps: dict, pattern: str | None) -> list:
    if pattern is None:
        return list(exps.values())
    chosen = [e for e in exps.values() if fnmatch.fnmatch(e.name, pattern) or pattern in e.name]
    if not chosen:
        raise exp_lib.UnknownExperiment(f"--only '{pattern}' matches no experiment (see `lsb list`)")
    return chosen


def _scale(exp, cname: str, runs: str) -> dict:
    """The report's note on a run's scale: its config, and the command that runs the medium config
    (which can decide what quick cannot) into the report's own runs folder."""
    where = "" if Path(runs) == Path(runner.DEFAULT_RUNS) else f"--runs {runs} "
    return {"config": cname, "decide_with": (f"lsb {where}reproduce --medium --only {exp.name}"
                                             if cname == "quick" and "medium" in exp.configs else None)}


def cmd_reproduce(args) -> int:
    mode = "full" if args.full else "medium" if args.medium else "quick"
    config_of = lambda exp: mode if mode in exp.configs else "quick"   # noqa: E731  (medium falls back to quick)
    everything = exp_lib.discover()
    chosen = select(everything, args.only)
    runs_root = Path(args.runs)
    entries, failed = [], 0
    chosen_names = {e.name for e in chosen}
    for exp in everything.values():
        if exp.name in chosen_names:
            continue
        cname = config_of(exp)
        run_dir = runner.default_run_dir(runs_root, exp.name, cname, exp.configs[cname])
        if runner.status_of(run_dir) == "complete" and (run_dir / "results.json").is_file():
            # --only keeps earlier results in the report, their claims decided as `lsb run` would
            try:
                results = runner.redecided_results(run_dir, exp, exp.configs[cname])
            except (OSError, ValueError) as e:
                print(f"lsb: skipping the earlier run {run_dir} in the report: {e}", file=sys.stderr)
                continue
            entries.append({"experiment": exp.name, "reproduces": exp.reproduces, "run_dir": str(run_dir),
                            "status": "complete", "results": results, "earlier": True,
                            **_scale(exp, cname, args.runs)})
    for exp in chosen:
        cname = config_of(exp)
        cfg = exp.configs[cname]
        entry = {"experiment": exp.name, "reproduces": exp.reproduces,
                 "run_dir": str(runner.default_run_dir(runs_root, exp.name, cname, cfg)),
                 **_scale(exp, cname, args.runs)}
        print(f"== {exp.name} ({cname}): {exp.reproduces}", file=sys.stderr, flush=True)
        try:
            run_dir, results = runner.run_experiment(exp, cfg, cname, runs_root=runs_root, resume=True,
                                                     force=args.force, progress=not args.no_progress)
            entry.update(status="complete", results=results, run_dir=str(run_dir))
        except Exception as e:  # keep going: the report shows what failed
            failed += 1
            if isinstance(e, (UsageError, RunFailure, OSError)):
                print(f"lsb: error: {error_line(e)}", file=sys.stderr)
            else:
                traceback.print_exc()
            entry.update(status="failed", error=f"{type(e).__name__}: {e}")
        entries.append(entry)
    order = {name: i for i, name in enumerate(everything)}
    entries.sort(key=lambda e: order[e["experiment"]])
    name = "report.md" if mode == "quick" else f"report-{mode}.md"
    path = report_lib.write_report(runs_root / name, entries, mode)
    print(f"report: {path} ({len(entries) - failed} complete, {failed} failed)")
    return 1 if failed else 0


def error_line(e: BaseException) -> str:
    """One line for an error the project names (OSErrors with their file)."""
    if isinstance(e, OSError) and not isinstance(e, (UsageError, RunFailure)):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return " ".join(str(e).split("\n"))


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        for flag, where in (("--runs", getattr(args, "runs", None)), ("--out", getattr(args, "out", None))):
            if where is not None and runner.is_url(where):   # before Path() folds gs://b into gs:/b
                raise runner.RunExists(f"{flag} {where}: run directories must be local paths (checkpoints inside "
                                       "a run may go to remote storage; see docs/tpu.md)")
        if args.command in ("run", "reproduce"):   # several processes (docs/tpu.md): before any device is used
            from lsb_jax.train.hosts import maybe_initialize_distributed, use_compile_cache, use_cpu_cores  # noqa: PLC0415
            use_cpu_cores(args.cpu_devices)
            use_compile_cache(args.compile_cache)
            maybe_initialize_distributed()
        return {"list": cmd_list, "show": cmd_show, "run": cmd_run, "reproduce": cmd_reproduce}[args.command](args)
    except UsageError as e:
        print(f"lsb: error: {error_line(e)}", file=sys.stderr)
        return 2
    except (RunFailure, OSError) as e:
        print(f"lsb: error: {error_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
