#!/usr/bin/env python
"""Search efficiency: how much of an exhaustive sweep's time `tuner search` (sampling and its
verification stage) needs to return a verified pick worth 95% of the verified best, measured for real
(issues 8 and 13).

    python benchmarks/search_efficiency.py --model PATH_OR_ZOO_OR_MADE [--grid-space small|default]
        [--seeds 3] [--out results/bench/...]

1. The grid: every configuration of the benchmark's space is measured once, through tuner's own
   TrialRunner (same render, load, first request and perf_analyzer code path as a search trial), on
   one tritonserver. Its wall-clock is T_grid; its p99s give a loose and a tight SLA.
2. `tuner.search.run` searches the same space with the same measurement settings, one fresh study
   per seed and per SLA given to it (--search-sla none,loose,tight), with a time budget of a
   fraction of T_grid that its verification stage shares (verify.share of it).
3. The truth: the grid's near-best points and every search's verified pick measured again in
   interleaved shuffled rounds, each one reloaded, with tuner's own Verifier; a point's truth is the
   median of its rounds with a bootstrap 95% interval. The verified best per objective is the best
   truth median whose p99 upper bound meets the SLA.
4. A table (printed, and written as markdown + JSON under --out): per objective, the search's whole
   time as a share of T_grid when its verified pick is worth >= 0.95 of the verified best, the share
   of that time spent verifying, and the machine's noise next to the figures.

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
from benchmarks.efficiency.runner import (FixedRunner, LineReporter, measure_truth, measure_winner,  # noqa: E402
                                          run_search, trial_rows)
from benchmarks.efficiency.space import (GRID_SPACES, RUNTIME, baseline_concurrency, benchmark_space,  # noqa: E402
                                         describe_space, grid_knobs)
from tuner.storage import open_storage  # noqa: E402
from benchmarks.efficiency.stats import (OBJECTIVES, busy_time, objective_slas, params_key,  # noqa: E402
                                         records_of, time_split)
from benchmarks.efficiency.truth import (evaluate_search, evaluate_verified, grid_slas, grid_summary,  # noqa: E402
                                         interleaved_truth, machine_drift, point_key, summarize,
                                         summarize_verified, truth_as_records, truth_candidates, truth_noise,
                                         verified_best, verified_winner)
from tuner import experiment, model_source, verification, zoo  # noqa: E402
from tuner.errors import TunerError  # noqa: E402
from tuner.experiment import Experiment, MeasureSpec, Space, VerifySpec  # noqa: E402
from tuner.space import grid as full_grid  # noqa: E402
from tuner.space import widen_for_baseline  # noqa: E402

FLAGS = {"max_queue_delay_us": "queue-delay-us"}  # a knob whose documented flag is not its name

# Models the benchmark makes itself (tests/models.py mlp(...)), written to results/bench/<name>.onnx on first use:
# `--model heldout` runs on the held-out model without a separate step.
MADE_MODELS = {
    # The held-out model made for issue 13: no heuristic of tuner (first-trial shapes, ramp floor, ...) was chosen
    # on it. Wide and shallow: 128 -> 1024 -> 32.
    "heldout": {"features": 128, "hidden": 1024, "outputs": 32, "layers": 2, "seed": 7},
    # tests/models.py mlp() with its defaults (64 -> 256 -> 256 -> 8): the MLP the earlier benchmark runs used
    # (results/bench/mlp.onnx) and the heuristics were chosen on.
    "mlp": {},
}
SEARCH_SLAS = ("none", "loose", "tight")


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
    p.add_argument("--model", required=True,
                   help="zoo model (wenet-encoder, wenet-tiny-encoder), an .onnx file, a Triton model dir, or a model the benchmark "
                        f"makes itself ({', '.join(MADE_MODELS)}: results/bench/<name>.onnx, made on first use; "
                        "heldout is the held-out model of issue 13)")
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
    s.add_argument("--search-sla", type=_search_slas, default=list(SEARCH_SLAS),
                   help="comma list of the SLAs given to the searches as max_p99_ms, one search per seed and SLA "
                        "(default none,loose,tight: every objective is judged on searches given its SLA; an "
                        "objective without its own searches is judged on the unconstrained searches' finalists)")
    s.add_argument("--verify-share", type=float, default=None,
                   help="share of each search's timeout its verification stage may take (default: the experiment "
                        "file's verify.share, else tuner's 0.3)")
    s.add_argument("--data-seed", type=int, default=0,
                   help="seed of the sample inputs, the same for the grid and every search "
                        "(their experiments' measure.data_seed)")
    s.add_argument("--repeats", type=int, default=0,
                   help="measure each unconstrained search's last per-trial pick again this many times (default 0: "
                        "the verified picks are measured in the truth's rounds instead)")
    s.add_argument("--truth-rounds", type=int, default=3,
                   help="interleaved rounds of the truth (at least 2): every candidate reloaded and measured once "
                        "per round; its truth is the median of its rounds")
    s.add_argument("--truth-within", type=float, default=0.9,
                   help="near-best: within this share of the grid's best under each SLA")
    s.add_argument("--truth-points", type=int, default=6, help="at most this many near-best points per objective")
    s.add_argument("--remeasure-grid", action="store_true", help="measure the grid again even if --out holds it")
    s.add_argument("--cache-dir", type=Path, default=Path("results/cache"), help="zoo model export cache to share")
    s.add_argument("--dry-run", action="store_true", help="print the space and the grid size, measure nothing")
    return p.parse_args(argv)


def _search_slas(text: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in SEARCH_SLAS]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"not an SLA: {', '.join(bad) or text!r} (use {', '.join(SEARCH_SLAS)})")
    return list(dict.fromkeys(items))


def made_model(name: str, folder: Path = Path("results/bench")) -> Path:
    """A model the benchmark makes (MADE_MODELS) as an .onnx file, made on first use (deterministic: seeded)."""
    import importlib.util

    path = folder / f"{name}.onnx"
    if not path.is_file():
        spec = importlib.util.spec_from_file_location("_tuner_test_models", REPO / "tests" / "models.py")
        models = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(models)
        models.mlp(path, **MADE_MODELS[name])
        print(f"made model {name} ({MADE_MODELS[name] or 'tests/models.py mlp() defaults'}): {path}", flush=True)
    return path


def settings(args) -> tuple[MeasureSpec, dict, str]:
    """Measurement and server settings: the experiment file's (if any), then the flags. The sample
    inputs are held at --data-seed for every run, so that every search measures the same requests
    as the grid and only the sampler's seed varies."""
    path = _experiment_file(args)
    base = experiment.load(path, {"model": args.model}) if path else None
    measure = base.measure if base else MeasureSpec()
    flags = {"interval_ms": args.interval_ms, "stability_percent": args.stability_percent,
             "max_windows": args.max_windows, "samples": args.samples, "timeout_s": args.perf_timeout_s,
             "data_seed": args.data_seed}
    measure = MeasureSpec(**(measure.model_dump() | {k: v for k, v in flags.items() if v is not None}))
    server = base.server.model_dump(mode="json") if base else {}
    return measure, server, f"{path} + flags" if path else "tuner's defaults + flags"


def _experiment_file(args) -> Path | None:
    if args.experiment is not None:
        return args.experiment
    default = Path("experiments") / f"{args.model}.yaml"
    return default if default.is_file() else None


def verify_settings(args) -> VerifySpec:
    """The searches' verification stage: the experiment file's `verify:` (else tuner's defaults), --verify-share
    over it, and always on: the benchmark values each search by its verified pick."""
    path = _experiment_file(args)
    verify = experiment.load(path, {"model": args.model}).verify if path else VerifySpec()
    return VerifySpec(**(verify.model_dump() | {"enabled": True}
                         | ({"share": args.verify_share} if args.verify_share is not None else {})))


def build_experiment(args, space: Space, measure: MeasureSpec, server: dict, out: Path, study: str, seed: int,
                     trials: int, timeout_s: float | None = None, max_p99_ms: float | None = None,
                     verify: VerifySpec | None = None) -> Experiment:
    verify = (verify or VerifySpec()).model_dump()
    return experiment.build({
        "model": args.model, "study": study, "storage": f"sqlite:///{out / 'bench.db'}", "results_dir": str(out),
        "trials": trials, "timeout_s": timeout_s, "max_p99_ms": max_p99_ms, "seed": seed,
        "baseline_concurrency": baseline_concurrency(space), "space": space.model_dump(),
        "measure": measure.model_dump(), "server": server, "verify": verify,
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


def measure_grid(runner: FixedRunner, points: list[dict], args) -> tuple[list[dict], dict, optuna.Study]:
    """The grid (resumed if --out holds part of it): its trials, the SLAs from its p99s, and its study."""
    study = runner.measure("grid", points, "grid", fresh=args.remeasure_grid)
    keys = {params_key(p) for p in points}
    grid_trials = [t for t in trial_rows(study) if params_key(t["params"]) in keys
                   and (t["state"] == "COMPLETE" or t["error"])]  # not the interrupted ones
    slas = grid_slas(grid_trials, args.loose_quantile, args.tight_quantile, args.loose_sla_ms, args.tight_sla_ms)
    return grid_trials, slas, study


def truth_targets(grid_trials: list[dict], grid_study: optuna.Study, slas: dict, searches: list[dict],
                  args) -> tuple[dict[tuple, tuple[optuna.Study, int]], dict[tuple, str]]:
    """What the truth measures: the grid's near-best points (by its single draws, per objective) and every search's
    verified pick under every objective, each with the study and trial that measured it (a pick outside the grid
    through its search's trial); and each point's configuration, for the tables."""
    obj = objective_slas(slas)
    measured = {params_key(t["params"]): t for t in grid_trials if t["throughput"] is not None}
    targets = {k: (grid_study, measured[k]["number"])
               for k in truth_candidates(records_of(grid_trials), obj, args.truth_within, args.truth_points)}
    configs = {k: t["config"] for k, t in measured.items()}
    for s in searches:
        rows = {t["number"]: t for t in s["trials"]}
        for name in OBJECTIVES:
            n = verified_winner(s["verification"], obj[name])
            if n not in rows:
                continue
            k = point_key(rows[n])
            configs.setdefault(k, rows[n]["config"])
            if k not in targets:
                targets[k] = (grid_study, measured[k]["number"]) if k in measured else (s["study"], n)
    return targets, configs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        space = benchmark_space(args.grid_space, **{k.name: getattr(args, k.name) for k in grid_knobs()})
        if args.truth_rounds < 2:
            print("error: --truth-rounds must be at least 2 (an interval needs rounds)", file=sys.stderr)
            return 2
        if args.model in MADE_MODELS and not Path(args.model).exists() and zoo.get(args.model) is None:
            args.model = str(made_model(args.model))
        measure, server, measure_from = settings(args)
        verify = verify_settings(args)
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
    print(f"searches: {args.seeds} seeds x SLA {','.join(args.search_sla)}, each ending with tuner's verification "
          f"stage ({verify.share:.0%} of its budget, {verify.min_rounds}-{verify.max_rounds} rounds, target "
          f"+-{verify.target_half_width:.0%}); truth: {args.truth_rounds} interleaved rounds", flush=True)
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
                    "truth_rounds": args.truth_rounds, "truth_within": args.truth_within,
                    "truth_points": args.truth_points}
    grid_measure = measure.model_copy(update={"concurrency_search": "sample", "confirm_best": False})
    searches: list[dict] = []
    try:
        grid_exp = build_experiment(args, space, grid_measure, server, out, "grid", args.data_seed, len(points))
        with FixedRunner(grid_exp, storage) as runner:
            grid_trials, slas, grid_study = measure_grid(runner, points, args)
        t_grid = busy_time([(t["start_s"], t["end_s"]) for t in grid_trials])
        obj = objective_slas(slas)
        print(f"grid: T_grid {t_grid:.1f} s over {len(grid_trials)} configurations; SLAs {slas}", flush=True)
        budget = args.budget_s or args.budget_fraction * t_grid
        report |= {"budget_s": budget, "budget_fraction": budget / t_grid if t_grid else 0.0,
                   "search_sla": ",".join(args.search_sla), "search_trials_cap": cap,
                   "verify": verify.model_dump() | {"budget_s": verify.budget_s(budget)}}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for kind in args.search_sla:
                sla = None if kind == "none" else slas[kind]
                name = f"search-seed{seed}" if kind == "none" else f"search-{kind}-seed{seed}"
                exp = build_experiment(args, space, measure, server, out, name, seed, cap, budget, sla, verify)
                print(f"search seed {seed}, SLA {kind}{'' if sla is None else f' ({sla:.2f} ms)'}: budget "
                      f"{budget:.1f} s (verification {exp.verify.budget_s(budget):.1f} s of it), at most {cap} trials",
                      flush=True)
                found = run_search(exp, storage, LineReporter(f"seed {seed} {kind}"))
                trials = trial_rows(found)
                span = max((t["end_s"] for t in trials), default=0.0)
                searches.append({"seed": seed, "search_sla": kind, "search_sla_ms": sla, "budget_s": budget,
                                 "t_grid_s": t_grid, "study": found, "split": time_split(trials, span),
                                 "verification": verification.stored(found), "trials": trials})
        with FixedRunner(grid_exp, storage) as runner:
            targets, configs = truth_targets(grid_trials, grid_study, slas, searches, args)
            print(f"truth: {len(targets)} points, {args.truth_rounds} interleaved rounds, each point reloaded "
                  f"every round", flush=True)
            rounds, truth_s = measure_truth(runner, targets, args.truth_rounds, seed=args.data_seed)
            truth = interleaved_truth(rounds)
            for k, v in truth.items():
                v["config"] = configs.get(k, "")
            best_keys = {name: verified_best(truth, obj[name]) for name in OBJECTIVES}
            truth_records = truth_as_records(truth, records_of(grid_trials))
            grid = grid_summary(grid_trials, slas, truth_records, list(truth), best_keys)
            grid["drift"] = machine_drift(grid_trials, [[{"params": dict(k), "throughput": m["throughput"]}
                                                          for k, m in r.items() if m] for r in rounds])
            grid["noise"] = truth_noise(truth, rounds) | {"seconds": round(truth_s, 1)}
            grid["truth"] = [{"key": [list(kv) for kv in k], "outside_grid": targets[k][0] is not grid_study} | v
                             for k, v in sorted(truth.items(), key=lambda kv: -kv[1]["throughput"]["median"])]
            report["grid"] = grid
            print(best_table(grid), flush=True)
            for s in searches:
                s["verified"] = evaluate_verified(s, truth, best_keys, obj, t_grid)
                s["objectives"] = evaluate_search(s["trials"], grid["best"], grid["objective_slas"], truth_records,
                                                  t_grid)
                s["outside_grid"] = sum(r.key not in truth_records for r in records_of(s["trials"])
                                        if r.throughput is not None)
            plain = [s for s in searches if s["search_sla"] == "none"]
            if args.repeats and plain:
                report["repeats"] = [measure_winner(runner, s, args.repeats) for s in plain]
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished grid trials are kept in the study; run the same command again to resume "
              "(the searches and the truth's rounds run again)", file=sys.stderr)
        return 130
    for s in searches:
        s.pop("study", None)
    report["searches"] = searches
    report["verified_summary"] = summarize_verified(truth, best_keys, obj, searches)
    report["summary"] = summarize(grid, [s for s in searches if s["search_sla"] == "none"] or searches)
    report["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if any(s["outside_grid"] for s in searches):
        report["notes"].append("some search trials fell outside the grid: " +
                               ", ".join(f"seed {s['seed']} ({s['search_sla']}): {s['outside_grid']}"
                                         for s in searches if s["outside_grid"]))
    markdown = render_markdown(report)
    (out / "report.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    print()
    print(markdown)
    print(f"written: {out / 'report.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
