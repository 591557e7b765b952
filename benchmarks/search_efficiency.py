#!/usr/bin/env python
"""Search efficiency: how fast `tuner search` gets within 95% of the best configuration that an
exhaustive sweep of the same space finds, measured for real (issue 8).

    python benchmarks/search_efficiency.py --model PATH_OR_ZOO [--grid-space small|default]
        [--seeds 3] [--out results/bench/...]

1. The ground truth: every configuration of the benchmark's space is measured once, through
   tuner's own TrialRunner (same render, load, first request and perf_analyzer code path as a
   search trial), on one tritonserver. Its wall-clock is T_grid. The grid gives the best
   throughput overall and under two p99 SLAs derived from its own p99 distribution.
2. `tuner.search.run` searches the same space with the same measurement settings, one fresh study
   per seed, with a time budget of a fraction of T_grid. For each seed and objective: the time
   until the best-so-far first reaches 95% of the grid's best, and the final ratio to it.
3. A table (printed, and written as markdown + JSON under --out), the split of trial time into
   load / first request / measurement, and the grid winner measured again (reloaded) N times.

docs/search-efficiency.md explains the method and the choices made here; the parts live in
benchmarks/efficiency/ (this file: the command line and the order of the steps).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: import the repo's tuner and benchmarks
    sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from benchmarks.efficiency.report import best_table, render_markdown  # noqa: E402
from benchmarks.efficiency.runner import (FixedRunner, LineReporter, measure_winner, run_search,  # noqa: E402
                                          trial_rows)
from benchmarks.efficiency.space import (GRID_SPACES, RUNTIME, baseline_concurrency, benchmark_space,  # noqa: E402
                                         describe_space, grid_knobs)
from tuner.storage import open_storage  # noqa: E402
from benchmarks.efficiency.stats import Record, objective_slas, params_key, records_of, time_split  # noqa: E402
from benchmarks.efficiency.truth import (evaluate_search, grid_slas, grid_summary, ground_truth,  # noqa: E402
                                         machine_drift, summarize, truth_candidates, unconfirmed_bests)
from tuner import experiment, model_source, zoo  # noqa: E402
from tuner.errors import TunerError  # noqa: E402
from tuner.experiment import Experiment, MeasureSpec, Space  # noqa: E402
from tuner.space import grid as full_grid  # noqa: E402
from tuner.space import widen_for_baseline  # noqa: E402

FLAGS = {"max_queue_delay_us": "queue-delay-us"}  # a knob whose documented flag is not its name


def _csv(kind):
    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if kind is bool:
            table = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
            try:
                return [table[x.lower()] for x in items]
            except KeyError as exc:
                raise argparse.ArgumentTypeError(f"not a boolean: {exc.args[0]} (use true/false)") from None
        return [kind(x) for x in items]

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name (wenet, wenet-tiny), an .onnx file or a Triton model dir")
    p.add_argument("--grid-space", choices=sorted(GRID_SPACES), default="default",
                   help="preset space (default: 648 configurations; small: 72)")
    p.add_argument("--seeds", type=int, default=3,
                   help="number of searches (seeds --first-seed, +1, ...); 0: the grid only")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the study DB, server logs, report.md and results.json "
                        "(default results/bench/search-efficiency/<model>-<grid-space>)")
    narrow = p.add_argument_group("narrow the space (comma lists replace the preset's values; one flag per knob "
                                  "of tuner's knob table)")
    for knob in grid_knobs():
        flag = FLAGS.get(knob.name, knob.name.replace("_", "-"))
        narrow.add_argument(f"--{flag}", dest=knob.name, metavar=flag.replace("-", "_").upper(),
                            type=_csv(knob.type), default=None, help=knob.description)
    m = p.add_argument_group("measurement (grid and searches alike): the experiment file's, else tuner's "
                             "defaults; each flag overrides")
    m.add_argument("--experiment", type=Path, default=None,
                   help="take measure: and server: from this experiment file (default: experiments/<model>.yaml "
                        "when it exists, as `tuner search` does); its space is not used")
    m.add_argument("--interval-ms", type=int, default=None)
    m.add_argument("--stability-percent", type=float, default=None)
    m.add_argument("--max-windows", type=int, default=None)
    m.add_argument("--samples", type=int, default=None)
    m.add_argument("--perf-timeout-s", type=float, default=None)
    s = p.add_argument_group("SLAs and searches")
    s.add_argument("--loose-quantile", type=float, default=0.5, help="loose SLA = this quantile of the grid's p99s")
    s.add_argument("--tight-quantile", type=float, default=0.25, help="tight SLA = this quantile of the grid's p99s")
    s.add_argument("--loose-sla-ms", type=float, default=None, help="fix the loose SLA instead")
    s.add_argument("--tight-sla-ms", type=float, default=None, help="fix the tight SLA instead")
    s.add_argument("--budget-fraction", type=float, default=0.15,
                   help="each search's timeout as a fraction of T_grid (default 0.15: T_grid/9 plus a margin)")
    s.add_argument("--budget-s", type=float, default=None, help="each search's timeout in seconds instead")
    s.add_argument("--search-trials", type=int, default=None, help="trial cap per search (default: 2 x grid size)")
    s.add_argument("--search-sla", choices=["none", "loose", "tight"], default="none",
                   help="max_p99_ms given to the search (default none: the Pareto search serves every SLA)")
    s.add_argument("--data-seed", type=int, default=0,
                   help="seed of the sample inputs, the same for the grid and every search "
                        "(their experiments' measure.data_seed)")
    s.add_argument("--repeats", type=int, default=3,
                   help="measure each search's final pick again this many times (0: skip)")
    s.add_argument("--truth-repeats", type=int, default=2,
                   help="measure the grid's near-best points this many more times; the truth is their mean")
    s.add_argument("--truth-within", type=float, default=0.9,
                   help="near-best: within this share of the grid's best under each SLA")
    s.add_argument("--truth-points", type=int, default=6, help="at most this many near-best points per objective")
    s.add_argument("--remeasure-grid", action="store_true", help="measure the grid again even if --out holds it")
    s.add_argument("--cache-dir", type=Path, default=Path("results/cache"), help="zoo model export cache to share")
    s.add_argument("--dry-run", action="store_true", help="print the space and the grid size, measure nothing")
    return p.parse_args(argv)


def settings(args) -> tuple[MeasureSpec, dict, str]:
    """Measurement and server settings: the experiment file's (if any), then the flags. The sample
    inputs are held at --data-seed for every run, so that every search measures the same requests
    as the grid and only the sampler's seed varies."""
    path = args.experiment
    if path is None and (default := Path("experiments") / f"{args.model}.yaml").is_file():
        path = default
    base = experiment.load(path, {"model": args.model}) if path else None
    measure = base.measure if base else MeasureSpec()
    flags = {"interval_ms": args.interval_ms, "stability_percent": args.stability_percent,
             "max_windows": args.max_windows, "samples": args.samples, "timeout_s": args.perf_timeout_s,
             "data_seed": args.data_seed}
    measure = MeasureSpec(**(measure.model_dump() | {k: v for k, v in flags.items() if v is not None}))
    server = base.server.model_dump(mode="json") if base else {}
    return measure, server, f"{path} + flags" if path else "tuner's defaults + flags"


def build_experiment(args, space: Space, measure: MeasureSpec, server: dict, out: Path, study: str, seed: int,
                     trials: int, timeout_s: float | None = None, max_p99_ms: float | None = None) -> Experiment:
    return experiment.build({
        "model": args.model, "study": study, "storage": f"sqlite:///{out / 'bench.db'}", "results_dir": str(out),
        "trials": trials, "timeout_s": timeout_s, "max_p99_ms": max_p99_ms, "seed": seed,
        "baseline_concurrency": baseline_concurrency(space), "space": space.model_dump(),
        "measure": measure.model_dump(), "server": server,
    }, "benchmark")


def _zoo_cache(out: Path, cache_dir: Path, model: str) -> None:
    """Zoo models export once into results/cache/zoo; the benchmark's results_dir (--out) shares it."""
    if zoo.get(model) is None:
        return
    link = out / "cache" / "zoo"
    if link.exists() or link.is_symlink():
        return
    (cache_dir / "zoo").mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to((cache_dir / "zoo").resolve(), target_is_directory=True)


def _install_sigterm():
    def handler(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def measure_grid(runner: FixedRunner, points: list[dict], args) -> tuple[dict, dict[tuple, Record]]:
    """The grid (resumed if --out holds part of it), then its near-best points measured again until
    the best of each objective rests on more than one draw: the grid's summary and the ground truth."""
    started = time.monotonic()
    study = runner.measure("grid", points, "grid", fresh=args.remeasure_grid)
    keys = {params_key(p) for p in points}
    grid_trials = [t for t in trial_rows(study) if params_key(t["params"]) in keys
                   and (t["state"] == "COMPLETE" or t["error"])]  # not the interrupted ones
    slas = grid_slas(grid_trials, args.loose_quantile, args.tight_quantile, args.loose_sla_ms, args.tight_sla_ms)
    records = records_of(grid_trials)
    again_keys = truth_candidates(records, objective_slas(slas), args.truth_within, args.truth_points)
    params_of = {params_key(t["params"]): t["params"] for t in grid_trials}
    for attempt in range(3):  # a point whose single draw becomes the best once the others are averaged: again
        again: list[Record] = []
        rounds: list[list[dict]] = []
        for i in range(1, args.truth_repeats + 1):
            st = runner.measure(f"truth-{i}", [params_of[k] for k in again_keys],
                                f"truth {i}/{args.truth_repeats}", fresh=args.remeasure_grid and attempt == 0,
                                order_seed=i)
            rounds.append([t for t in trial_rows(st) if params_key(t["params"]) in set(again_keys)])
            again += records_of(rounds[-1])
        truth = ground_truth(records, again)
        missing = unconfirmed_bests(truth, objective_slas(slas), again_keys)
        if not missing or not args.truth_repeats:
            break
        again_keys += missing
    grid = grid_summary(grid_trials, slas, truth, again_keys)
    grid["drift"] = machine_drift(grid_trials, rounds)
    print(f"grid: T_grid {grid['t_grid_s']:.1f} s over {len(grid_trials)} configurations "
          f"(this invocation: {time.monotonic() - started:.1f} s, with {len(again_keys)} points measured "
          f"{args.truth_repeats} more times); SLAs {grid['slas']}", flush=True)
    print(best_table(grid), flush=True)
    return grid, truth


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        space = benchmark_space(args.grid_space, **{k.name: getattr(args, k.name) for k in grid_knobs()})
        measure, server, measure_from = settings(args)
        out = args.out or Path("results/bench/search-efficiency") / f"{Path(args.model).stem}-{args.grid_space}"
        out.mkdir(parents=True, exist_ok=True)
        _zoo_cache(out, args.cache_dir, args.model)
        source = model_source.resolve(args.model, out / "cache")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: invalid space: {problems}", file=sys.stderr)
        return 2
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batched = source.signature.batched
    widened = widen_for_baseline(space, baseline_concurrency(space), batched, RUNTIME)
    notes = []
    if widened != space:
        changed = [k for k in Space.model_fields if getattr(widened, k) != getattr(space, k)]
        notes.append(f"widened {', '.join(changed)} to hold Triton's default config, which every search measures first")
        space = widened
    points = full_grid(space, batched, RUNTIME)
    print(f"model {args.model} (served as {source.name}, {'batched' if batched else 'not batched'}); "
          f"space {args.grid_space}:\n{describe_space(space, batched)}", flush=True)
    print(f"measurement ({measure_from}): {measure.model_dump()}; results under {out}", flush=True)
    for n in notes:
        print(f"note: {n}", flush=True)
    if args.dry_run:
        return 0

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    _install_sigterm()
    storage = open_storage(f"sqlite:///{out / 'bench.db'}")
    cap = args.search_trials or 2 * len(points)
    report: dict = {"model": args.model, "grid_space": args.grid_space, "space": space.model_dump(),
                    "space_table": describe_space(space, batched), "grid_size": len(points),
                    "measure": measure.model_dump(), "measure_from": measure_from,
                    "command": " ".join(["python", *sys.argv]),
                    "machine": f"{os.uname().nodename}, {os.cpu_count()} CPUs",
                    "sla_quantiles": [args.loose_quantile, args.tight_quantile], "notes": notes,
                    "truth_repeats": args.truth_repeats, "truth_within": args.truth_within}
    grid_measure = measure.model_copy(update={"concurrency_search": "sample", "confirm_best": False})
    try:
        grid_exp = build_experiment(args, space, grid_measure, server, out, "grid", args.data_seed, len(points))
        with FixedRunner(grid_exp, storage) as runner:
            grid, truth = measure_grid(runner, points, args)
        report["grid"] = grid
        budget = args.budget_s or args.budget_fraction * grid["t_grid_s"]
        report |= {"budget_s": budget, "budget_fraction": budget / grid["t_grid_s"] if grid["t_grid_s"] else 0.0,
                   "search_sla": args.search_sla, "search_trials_cap": cap}
        sla = None if args.search_sla == "none" else grid["slas"][args.search_sla]
        searches = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            exp = build_experiment(args, space, measure, server, out, f"search-seed{seed}", seed, cap, budget, sla)
            print(f"search seed {seed}: budget {budget:.1f} s, at most {cap} trials", flush=True)
            found = run_search(exp, storage, LineReporter(f"seed {seed}"))
            trials = trial_rows(found)
            span = max((t["end_s"] for t in trials), default=0.0)
            searches.append({"seed": seed, "budget_s": budget, "split": time_split(trials, span),
                             "objectives": evaluate_search(trials, grid["best"], grid["objective_slas"],
                                                           truth, grid["t_grid_s"]),
                             "outside_grid": sum(r.key not in truth for r in records_of(trials)
                                                 if r.throughput is not None),
                             "trials": trials})
        if args.repeats and searches:
            with FixedRunner(grid_exp, storage) as runner:
                report["repeats"] = [measure_winner(runner, s, args.repeats) for s in searches]
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished grid trials are kept in the study; run the same command again to resume",
              file=sys.stderr)
        return 130
    report["searches"] = searches
    report["summary"] = summarize(grid, searches)
    report["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if any(s["outside_grid"] for s in searches):
        report["notes"].append("some search trials fell outside the grid: " +
                               ", ".join(f"seed {s['seed']}: {s['outside_grid']}" for s in searches))
    markdown = render_markdown(report)
    (out / "report.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print()
    print(markdown)
    print(f"written: {out / 'report.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
