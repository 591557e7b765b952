"""The search-efficiency benchmark's pure logic, on hand-made records: no server."""

import statistics
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import search_efficiency as se  # noqa: E402
from benchmarks.efficiency import report as rp  # noqa: E402
from benchmarks.efficiency import runner as rn  # noqa: E402
from benchmarks.efficiency import space as sp  # noqa: E402
from benchmarks.efficiency import stats as st  # noqa: E402
from benchmarks.efficiency import truth as tr  # noqa: E402
from tuner.storage import open_storage
from tuner.space import grid, suggest, triton_default_params  # noqa: E402

R = st.Record


def _keyed(*records):
    """Records with a key each and the truth equal to what they measured."""
    keyed = [replace(r, key=(i,)) for i, r in enumerate(records)]
    return keyed, tr.ground_truth(keyed)


def _t95(records, target, sla_ms=None, **kw):
    keyed, truth = _keyed(*records)
    return st.time_to_true_fraction(st.incumbent_trace(keyed, truth, sla_ms), target, **kw)


def test_time_to_95_is_when_the_pick_first_gets_there():
    records = [R(10, 50, 5), R(20, 80, 30), R(30, 96, 40), R(40, 99, 3)]
    assert _t95(records, 100) == (30, 3)
    # Order of the list does not matter, only the elapsed times.
    keyed, truth = _keyed(*records)
    assert st.time_to_true_fraction(st.incumbent_trace(list(reversed(keyed)), truth), 100) == (30, 3)
    # Under an SLA only the trials within it count: the 96 at p99 40 ms is over 10 ms.
    assert _t95(records, 100, sla_ms=10) == (40, 4)
    assert _t95(records, 100, sla_ms=1) is None
    assert _t95(records, None) is None  # no grid best to compare with


def test_failed_trials_count_as_trials_but_never_as_best():
    assert _t95([R(5, None, None), R(9, 95, 2)], 100) == (9, 2)
    assert st.best_of([R(5, None, None)]) is None


def test_the_threshold_is_inclusive_and_configurable():
    assert _t95([R(1, 95.0, 1)], 100) == (1, 1)
    assert _t95([R(1, 94.9, 1)], 100) is None
    assert _t95([R(1, 90, 1)], 100, fraction=0.9) == (1, 1)


def test_final_ratio_and_the_picks_over_time():
    records = [R(1, 60, 20), R(2, 50, 4), R(3, 70, 8), R(4, 65, 2)]
    assert st.final_ratio(records, 100) == pytest.approx(0.7)
    assert st.final_ratio(records, 80, sla_ms=5) == pytest.approx(65 / 80)
    assert st.final_ratio(records, 80, sla_ms=1) == 0.0  # nothing within the SLA
    assert st.final_ratio(records, None) is None
    keyed, truth = _keyed(*records)
    assert [(e, p.throughput) for e, _n, p, _t in st.incumbent_trace(keyed, truth)] == [
        (1, 60), (2, 60), (3, 70), (4, 70)]
    assert [(e, p.throughput) for e, _n, p, _t in st.incumbent_trace(keyed, truth, sla_ms=5)] == [(2, 50), (3, 50), (4, 65)]


def test_best_of_breaks_throughput_ties_on_p99():
    assert st.best_of([R(1, 100, 9, number=1), R(2, 100, 3, number=2)]).number == 2


def test_slas_are_quantiles_of_the_grids_p99s_unless_given():
    p99s = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert st.derive_slas(p99s) == {"loose": 3.0, "tight": 2.0}
    assert st.derive_slas(p99s, 0.9, 0.1) == {"loose": pytest.approx(4.6), "tight": pytest.approx(1.4)}
    assert st.derive_slas(p99s, loose_ms=10.0) == {"loose": 10.0, "tight": 2.0}
    assert st.quantile([7.0], 0.25) == 7.0
    with pytest.raises(ValueError):
        st.quantile([], 0.5)


def test_busy_time_leaves_out_long_pauses_only():
    assert st.busy_time([(0, 5), (6, 10), (12, 20)]) == 20
    assert st.busy_time([(0, 5), (6, 10), (200, 210)], max_gap_s=60) == 20  # resumed after a pause
    assert st.busy_time([]) == 0.0


def test_seed_stats_treat_never_as_infinitely_late():
    assert st.seed_stats([0.1, 0.3, 0.2]) == {"median": 0.2, "min": 0.1, "max": 0.3, "reached": 3, "seeds": 3}
    assert st.seed_stats([0.1, None, 0.2]) == {"median": 0.2, "min": 0.1, "max": None, "reached": 2, "seeds": 3}
    assert st.seed_stats([None, None, 0.2])["median"] is None
    assert st.seed_stats([])["seeds"] == 0


def test_random_search_expectation_from_the_grid():
    grid = [R(i, t, 1) for i, t in enumerate([100, 96, 50, 40, 30, 20, 10, 5, 1])]
    expected = st.random_search_expectation(grid, 100)
    assert expected["good_points"] == 2 and expected["points"] == 9
    assert expected["expected_trials"] == pytest.approx(10 / 3, abs=0.01)
    assert expected["expected_fraction"] == pytest.approx(10 / 27, abs=1e-3)
    assert st.random_search_expectation(grid, None) is None


def test_the_runs_pick_is_valued_by_the_truth_not_by_its_own_lucky_draw():
    truth = {("a",): R(0, 90, 5), ("b",): R(0, 100, 1), ("c",): R(0, 70, 1)}
    searched = [R(3, 120, 2, key=("a",), number=0),  # a lucky draw of a: the run picks it, worth 90
                R(4, 95, 1, key=("b",), number=1),  # b is better but measured below a's lucky 120
                R(6, 130, 1, key=("b",), number=2)]  # b again, now measured best: picked
    trace = st.incumbent_trace(searched, truth)
    assert [(e, n, p.key, t.throughput) for e, n, p, t in trace] == [
        (3, 1, ("a",), 90), (4, 2, ("a",), 90), (6, 3, ("b",), 100)]
    assert st.time_to_true_fraction(trace, 100) == (6, 3)
    assert st.time_to_true_fraction(trace, 94) == (3, 1)  # 90 >= 0.95 x 94
    assert st.time_to_true_fraction(trace, None) is None
    # Under an SLA the truth's p99 decides: a's truth is at 5 ms, over a 3 ms SLA.
    trace = st.incumbent_trace(searched[:1], truth, sla_ms=3)
    assert trace[0][3] is None and st.time_to_true_fraction(trace, 50) is None


def test_the_points_of_one_ramp_trial_arrive_together():
    truth = {("lo",): R(0, 50, 1), ("hi",): R(0, 80, 9)}
    ramp = [R(5, 50, 1, key=("lo",), number=0), R(5, 80, 9, key=("hi",), number=0)]
    trace = st.incumbent_trace(ramp, truth)
    assert len(trace) == 1 and trace[0][1] == 1 and trace[0][2].key == ("hi",)
    assert st.incumbent_trace(ramp, truth, sla_ms=2)[0][2].key == ("lo",)


def test_ramp_trials_give_one_record_per_concurrency():
    trial = _trial(7, 0, 9, 105.0, 4.0, {"instances": 2}, concurrency=8,
                   curve=[{"concurrency": 4, "throughput": 90.0, "p99_ms": 2.0},
                          {"concurrency": 8, "throughput": 110.0, "p99_ms": 4.5}])
    records = st.records_of([trial, _trial(8, 9, 10, None, None, {"instances": 1})])
    assert [(r.key, r.throughput, r.p99_ms, r.elapsed_s) for r in records] == [
        (st.params_key({"instances": 2, "concurrency": 4}), 90.0, 2.0, 9),
        # the chosen point carries the trial's stored figures (the mean of its confirmation)
        (st.params_key({"instances": 2, "concurrency": 8}), 105.0, 4.0, 9),
        (st.params_key({"instances": 1}), None, None, 10)]


def test_near_best_points_are_measured_again_and_averaged_into_the_truth():
    grid = [R(0, 100, 9, key=("a",)), R(0, 92, 2, key=("b",)), R(0, 60, 1, key=("c",)), R(0, 55, 1, key=("d",))]
    slas = {"overall": None, "loose": 5.0, "tight": 1.0}
    # overall: a and b (within 90% of 100); loose: b; tight: c and d (55 >= 0.9 x 60).
    assert tr.truth_candidates(grid, slas) == [("a",), ("b",), ("c",), ("d",)]
    assert tr.truth_candidates(grid, slas, per_objective=1) == [("a",), ("b",), ("c",)]
    truth = tr.ground_truth(grid, [R(0, 80, 7, key=("a",)), R(0, 90, 8, key=("a",)), R(0, None, None, key=("b",))])
    assert truth[("a",)].throughput == pytest.approx(90) and truth[("a",)].p99_ms == pytest.approx(8)
    assert truth[("b",)].throughput == 92  # a failed re-measurement adds nothing


def test_a_best_that_rests_on_one_draw_is_flagged_for_measuring_again():
    truth = {("a",): R(0, 90, 9, key=("a",)), ("b",): R(0, 95, 2, key=("b",)), ("c",): R(0, 50, 1, key=("c",))}
    slas = {"overall": None, "loose": 5.0, "tight": 1.5}
    assert tr.unconfirmed_bests(truth, slas, [("a",)]) == [("b",), ("c",)]
    assert tr.unconfirmed_bests(truth, slas, [("a",), ("b",), ("c",)]) == []


def test_the_sweep_loads_each_deployment_once_in_a_shuffled_order():
    points = [{"instances": i, "concurrency": c} for c in (16, 1, 4) for i in (1, 2, 3)]
    ordered = rn.by_deployment(points, order_seed=3)
    assert sorted(map(st.params_key, ordered)) == sorted(map(st.params_key, points))
    runs = [p["instances"] for p in ordered]
    assert [runs[i] for i in (0, 3, 6)] == [runs[i] for i in (2, 5, 8)]  # contiguous groups of 3
    assert len(set(runs[0::3])) == 3
    assert all([p["concurrency"] for p in ordered[i:i + 3]] == [1, 4, 16] for i in (0, 3, 6))


def _expected_size(space, batched=True):
    """The grid's size from the space's values alone: the batching knobs only for a batched model,
    the queue delay and preferred batch only with dynamic batching on (ONNX Runtime on CPU)."""
    size = (len(space.instances) * len(space.threads) * len(space.graph_optimization) * len(space.warmup)
            * len(space.concurrency))
    if batched:
        dynamic = len(space.max_queue_delay_us) * len(space.preferred_batch)
        batching = (False in space.dynamic_batching) + (True in space.dynamic_batching) * dynamic
        size *= len(space.max_batch_size) * batching
    return size


@pytest.mark.parametrize("preset, overrides, size", [
    ("default", {}, 3 * 4 * (1 + 2) * 3 * 6),
    ("small", {}, 2 * 2 * (1 + 2) * 2 * 3),
    ("small", {"graph_optimization": ["all", "basic"], "preferred_batch": [False, True]}, 2 * 2 * (1 + 4) * 2 * 2 * 3),
])
def test_preset_grids_are_every_distinct_configuration_tuner_can_ask_for(preset, overrides, size):
    space = sp.benchmark_space(preset, **overrides)
    points = grid(space, runtime=sp.RUNTIME)
    assert len(points) == _expected_size(space) == size
    assert len({st.params_key(p) for p in points}) == len(points)
    candidates = set()
    for p in points:
        trial = optuna.trial.FixedTrial(p)
        candidates.add(suggest(trial, space))
        assert trial.params == p  # suggest asks for exactly these params, no more, no fewer
    assert len(candidates) == len(points)
    assert all("max_queue_delay_us" not in p for p in points if not p["dynamic_batching"])
    assert {p["graph_optimization"] for p in points} == set(space.graph_optimization)


def test_grid_holds_tritons_default_at_the_baseline_concurrencies():
    space = sp.benchmark_space("small")
    keys = {st.params_key(p) for p in grid(space, runtime=sp.RUNTIME)}
    for c in sp.baseline_concurrency(space):
        assert st.params_key(triton_default_params(c)) in keys
    narrowed = sp.benchmark_space("small", concurrency=[8, 16])
    assert sp.baseline_concurrency(narrowed) == [8]


def test_unbatched_models_get_no_batching_knobs():
    space = sp.benchmark_space("small", instances=[1], threads=[0], concurrency=[1, 2])
    points = grid(space, batched=False, runtime=sp.RUNTIME)
    assert points == [{"runtime": sp.RUNTIME, "instances": 1, "threads": 0, "graph_optimization": "all",
                       "warmup": False, "concurrency": c} for c in (1, 2)]
    assert len(points) == _expected_size(space, batched=False)
    for p in points:
        trial = optuna.trial.FixedTrial(p)
        suggest(trial, space, batched=False)
        assert trial.params == p


def test_the_printed_space_lists_the_knob_tables_knobs_of_the_runtime():
    table = sp.describe_space(sp.benchmark_space("default"))
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[2:] if line.startswith("| ")]
    assert rows == ["instances", "max_batch_size", "dynamic_batching", "max_queue_delay_us", "preferred_batch",
                    "threads", "graph_optimization", "warmup", "concurrency", "runtime"]  # no gpus: CPU runtime
    assert "| max_batch_size | 1, 4, 16, 32 |" in table and "| dynamic_batching | false, true |" in table
    assert table.endswith("648 distinct configurations")


def test_narrowing_replaces_only_the_given_knobs():
    space = sp.benchmark_space("default", instances=[1], concurrency=[4])
    assert space.instances == [1] and space.concurrency == [4] and space.threads == [0, 1, 2]
    args = se.parse_args(["--model", "m.onnx", "--dynamic-batching", "false,true", "--threads", "0,2",
                          "--queue-delay-us", "0,500", "--graph-optimization", "all,basic"])
    assert args.dynamic_batching == [False, True] and args.threads == [0, 2]
    assert args.max_queue_delay_us == [0, 500] and args.graph_optimization == ["all", "basic"]
    assert args.instances is None  # not given: the preset's values
    with pytest.raises(SystemExit):
        se.parse_args(["--model", "m.onnx", "--warmup", "maybe"])


def test_every_run_measures_the_same_sample_inputs(tmp_path):
    """--data-seed becomes measure.data_seed of every experiment the benchmark builds, whatever the
    sampler's seed: tuner then draws the same sample inputs for the grid and every search."""
    from tuner.workspace import data_seed

    args = se.parse_args(["--model", "m.onnx", "--data-seed", "7"])
    measure, server, _ = se.settings(args)
    space = sp.benchmark_space("small")
    for seed in (0, 1, 2):
        exp = se.build_experiment(args, space, measure, server, tmp_path, f"search-seed{seed}", seed, 10)
        assert exp.measure.data_seed == 7 and data_seed(exp) == 7


def _trial(number, start, end, throughput, p99, params, **extra):
    return {"number": number, "state": "COMPLETE" if throughput else "FAIL", "params": params, "config": f"cfg{number}",
            "start_s": start, "end_s": end, "duration_s": end - start, "throughput": throughput, "p99_ms": p99,
            "load_s": 1.0, "first_request_ms": 100.0, "measure_s": 3.0, "repeat_of": None} | extra


GRID = [
    _trial(0, 0, 5, 100.0, 2.0, {"concurrency": 1, "instances": 1}),
    _trial(1, 5, 10, 200.0, 6.0, {"concurrency": 4, "instances": 1}),
    _trial(2, 10, 15, 300.0, 20.0, {"concurrency": 8, "instances": 1}),
    _trial(3, 15, 20, 150.0, 1.0, {"concurrency": 1, "instances": 2}),
    _trial(4, 20, 25, None, None, {"concurrency": 4, "instances": 2}),
]


def _grid():
    slas = tr.grid_slas(GRID, 0.5, 0.25, None, None)
    return tr.grid_summary(GRID, slas, tr.ground_truth(st.records_of(GRID)))


def test_grid_summary_best_per_objective_and_time():
    grid = _grid()
    assert grid["t_grid_s"] == 25
    assert grid["slas"] == {"loose": 4.0, "tight": 1.75}  # quantiles of p99s 1, 2, 6, 20
    assert {k: (b or {}).get("number") for k, b in grid["best"].items()} == {"overall": 2, "loose": 3, "tight": 3}
    split = grid["split"]
    assert (split["trials"], split["measured"], split["failed"]) == (5, 5, 1)
    assert (split["load_s"], split["first_request_s"], split["measure_s"], split["between_trials_s"]) == (5, 0.5, 15, 0)
    # A re-measured point's truth is its mean: trial 2 falls to 240, below nothing else overall.
    again = [R(0, 180.0, 20.0, key=st.params_key(GRID[2]["params"]))]
    slas = tr.grid_slas(GRID, 0.5, 0.25, None, None)
    regraded = tr.grid_summary(GRID, slas, tr.ground_truth(st.records_of(GRID), again))
    assert regraded["best"]["overall"]["throughput"] == 240 and regraded["best"]["overall"]["grid_throughput"] == 300


def test_evaluate_search_and_the_printed_table():
    grid = _grid()
    truth = tr.ground_truth(st.records_of(GRID))
    seed0 = [  # its pick is worth 96.7% of the overall best at 5 s, the loose best at 2.5 s
        _trial(0, 0, 2.5, 160.0, 1.5, {"concurrency": 1, "instances": 2}),
        _trial(1, 2.5, 3, 160.0, 1.5, {"concurrency": 1, "instances": 2}, repeat_of=0),
        _trial(2, 3, 5, 290.0, 19.0, {"concurrency": 8, "instances": 1}),
    ]
    seed1 = [_trial(0, 0, 2.5, 90.0, 2.5, {"concurrency": 1, "instances": 1})]  # never gets there
    searches = []
    for seed, trials in ((0, seed0), (1, seed1)):
        span = max(t["end_s"] for t in trials)
        searches.append({"seed": seed, "budget_s": 5.0, "split": st.time_split(trials, span),
                         "objectives": tr.evaluate_search(trials, grid["best"], grid["objective_slas"], truth,
                                                          grid["t_grid_s"])})
    overall = searches[0]["objectives"]["overall"]
    assert (overall["t95_s"], overall["t95_fraction"], overall["trials_to_95"]) == (5, 0.2, 3)
    assert overall["final_ratio"] == 1.0  # by the truth: the grid's 300 for that point
    assert overall["measured_ratio"] == pytest.approx(290 / 300, abs=1e-4)
    assert overall["best_measured"] == 290.0 and dict(overall["best_key"]) == {"concurrency": 8, "instances": 1}
    loose = searches[0]["objectives"]["loose"]
    assert (loose["t95_fraction"], loose["final_ratio"]) == (0.1, 1.0)
    assert loose["measured_ratio"] == pytest.approx(160 / 150, abs=1e-4)
    assert searches[0]["split"]["reused"] == 1 and searches[0]["split"]["measured"] == 2
    assert searches[1]["objectives"]["overall"]["t95_fraction"] is None
    assert searches[1]["objectives"]["overall"]["final_ratio"] == pytest.approx(100 / 300, abs=1e-4)
    assert searches[1]["objectives"]["tight"]["final_ratio"] == 0.0  # p99 2.5 ms is over the tight 1.75 ms

    rows = tr.summarize(grid, searches)
    assert [r["objective"] for r in rows] == ["overall", "loose", "tight"]
    assert rows[0]["t95_fraction"] == {"median": None, "min": 0.2, "max": None, "reached": 1, "seeds": 2}
    assert rows[0]["trials_used"] == [3, 1]
    table = rp.objective_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| objective | SLA p99 ms | grid best infer/s | t95/T_grid median")
    assert lines[1].count("---") == len(lines[0].split("|")) - 2
    assert lines[2].startswith("| overall | none | 300.0 | never | 0.200 | never | 1 of 2 |")
    assert "| 1.000 / 0.333 | 0.967 / 0.300 |" in lines[2] and "| 3 / never | 3 / 1 |" in lines[2]
    assert lines[3].startswith("| loose | 4.00 | 150.0 | ")

    report = {"model": "m", "grid_space": "small", "finished": "now", "machine": "vm", "command": "python x",
              "space_table": "knobs", "measure": {}, "grid": grid, "sla_quantiles": [0.5, 0.25],
              "searches": searches, "budget_s": 5.0, "budget_fraction": 0.2, "search_sla": "none",
              "summary": rows, "notes": ["a note"],
              "repeats": [{"seed": 0, "trial": 2, "config": "cfg2", "stored": 300.0, "tolerance": 0.05,
                           "runs": [{"throughput": 310.0, "p99_ms": 19.0, "ratio": 310 / 300},
                                    {"throughput": 250.0, "p99_ms": 25.0, "ratio": 250 / 300},
                                    {"throughput": None, "p99_ms": None, "ratio": None}]}]}
    markdown = rp.render_markdown(report)
    assert "T_grid = 25.0 s for 5 configurations (5.00 s each)" in markdown
    assert "| search seed 0 | 3 (2 / 1 / 0 / 0) |" in markdown
    assert "## Seed 0: winner measured again" in markdown
    assert "| 1 | 310.0 | 1.033 | 19.00 | yes |" in markdown and "| 2 | 250.0 | 0.833 | 25.00 | NO |" in markdown
    assert "| 3 | failed | - | - | - |" in markdown
    assert "- a note" in markdown


def test_md_table_and_number_formatting():
    assert rp.md_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert rp.fmt(None) == "-" and rp.fmt(1.234) == "1.23"
    assert rp.fmt_list([0.5, None], ".1f") == "0.5 / never"


def test_grid_study_measures_each_point_once_and_resumes_after_an_interruption(tmp_path, capsys):
    """FixedRunner.measure with a stand-in for tuner's TrialRunner (no server)."""
    space = sp.benchmark_space("small", instances=[1, 2], max_batch_size=[4], dynamic_batching=[False],
                               threads=[0], concurrency=[1, 4, 16])
    points = grid(space, runtime=sp.RUNTIME)
    seen = []

    def objective(trial):
        candidate = suggest(trial, space, runtimes=[sp.RUNTIME])
        if len(seen) == 3 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        seen.append(candidate)
        return 100.0 * candidate.instances + candidate.concurrency, float(candidate.concurrency)

    interrupted = []
    runner = rn.FixedRunner(exp=None, storage=open_storage(f"sqlite:///{tmp_path / 'bench.db'}"))
    runner.objective, runner.reporter = objective, rn.LineReporter("grid")
    with pytest.raises(KeyboardInterrupt):
        runner.measure("grid", points, "grid")
    study = runner.measure("grid", points, "grid")  # the same command again
    rows = [t for t in rn.trial_rows(study) if t["state"] == "COMPLETE"]
    assert len(seen) == len(rows) == len(points) == 6
    assert {st.params_key(t["params"]) for t in rows} == {st.params_key(p) for p in points}
    assert "resuming: 3 of 6" in capsys.readouterr().out
    # A third run finds nothing left to measure.
    runner.measure("grid", points, "grid")
    assert len(seen) == 6


def test_machine_drift_from_identical_single_requests_and_repeated_rounds():
    single = {"concurrency": 1, "dynamic_batching": False, "instances": 1}
    trials = [
        _trial(0, 0, 1, 100.0, 1.0, single | {"max_batch_size": 4}, compute_infer_ms=0.3),
        _trial(1, 1, 2, 90.0, 1.0, single | {"max_batch_size": 32}, compute_infer_ms=0.6),
        _trial(2, 2, 3, 80.0, 1.0, single | {"max_batch_size": 4, "instances": 2}, compute_infer_ms=0.9),  # alone
        _trial(3, 2, 3, 300.0, 9.0, {"concurrency": 8, "dynamic_batching": True}, compute_infer_ms=2.0),
    ]
    again = [_trial(0, 0, 1, 240.0, 9.0, {"concurrency": 8, "dynamic_batching": True})]
    drift = tr.machine_drift(trials, [again])
    assert (drift["same_work_groups"], drift["same_work_points"], drift["median_max_over_min"]) == (1, 2, 2.0)
    assert drift["cv"] == pytest.approx(1 / 3, abs=1e-4)  # 0.3 and 0.6 around their mean 0.45
    assert drift["rounds"] == [{"points": 1, "mean_ratio_to_grid": 0.8, "min": 0.8, "max": 0.8}]
    lines = rp.drift_lines(drift)
    assert "max/min within a group 2.00 (median)" in lines[0] and "round 1: 1 points at 0.800" in lines[1]


# --- The verified truth and the verified picks (issue 13) ---

from tuner.verification.stats import interval  # noqa: E402

A, B, C, OFF = (("p", "a"),), (("p", "b"),), (("p", "c"),), (("p", "off"),)


def _m(throughput, p99):
    return {"throughput": throughput, "p99_ms": p99}


ROUNDS = [  # three interleaved rounds over three candidates; one failed measurement of c
    {A: _m(100, 5.0), B: _m(90, 2.0), C: _m(50, 1.0)},
    {A: _m(120, 6.0), B: _m(95, 2.2), C: None},
    {A: _m(80, 9.0), B: _m(93, 2.1), C: _m(54, 1.2)},
]


def test_the_truth_is_the_median_of_interleaved_rounds_with_tuners_interval():
    truth = tr.interleaved_truth(ROUNDS)
    a = truth[A]
    assert a["throughput"]["median"] == 100 and a["p99_ms"]["median"] == 6.0 and a["rounds"] == 3
    expected = interval([100, 120, 80])
    assert (a["throughput"]["low"], a["throughput"]["high"]) == (round(expected.low, 3), round(expected.high, 3))
    assert a["throughput"]["half_width"] == pytest.approx(expected.half_width, abs=1e-4)
    assert a["p99_ms"]["high"] == round(interval([5.0, 6.0, 9.0]).high, 3)
    assert truth[C]["rounds"] == 2 and truth[C]["throughput"]["median"] == 52  # the failed round adds nothing
    assert tr.interleaved_truth([{A: None}]) == {}  # never measured: no truth


def test_the_verified_best_meets_the_sla_on_the_p99_upper_bound():
    truth = tr.interleaved_truth(ROUNDS)
    assert tr.verified_best(truth, None) == A
    # a's p99 median 6.0 is within 8 ms, but its upper bound is not: b is the verified best.
    assert truth[A]["p99_ms"]["median"] <= 8 < truth[A]["p99_ms"]["high"]
    assert tr.verified_best(truth, 8.0) == B
    # c's p99 median (1.1 ms) is the lowest, but two rounds bound it only at 4.7 ms: under 2.5 ms
    # nothing is known to meet the SLA; b's three agreeing rounds bound it at 2.44 ms.
    assert truth[C]["p99_ms"]["median"] < 1.5 < truth[B]["p99_ms"]["high"] < 2.5 < truth[C]["p99_ms"]["high"]
    assert tr.verified_best(truth, 2.5) == B and tr.verified_best(truth, 1.5) is None
    high = truth[B]["p99_ms"]["high"]
    assert tr.meets_by_truth(truth[B], high) and not tr.meets_by_truth(truth[B], high - 0.01)
    assert not tr.meets_by_truth(None, None)


def _iv(median, half_width=0.02, p99=1.0, p99_high=None):
    return {"throughput": {"median": median, "low": median * (1 - half_width), "high": median * (1 + half_width),
                           "half_width": half_width},
            "p99_ms": {"median": p99, "low": p99, "high": p99_high or p99, "half_width": 0.0}}


VERIFICATION = {"winner": 3, "max_p99_ms": None, "rounds": 3, "stopped": "converged", "seconds": 30.0,
                "finalists": {3: _iv(110, p99=9.0, p99_high=12.0), 5: _iv(100, p99=4.0, p99_high=4.5),
                              0: _iv(60, p99=1.0)}}


def test_the_verified_winner_under_its_own_sla_or_derived_from_the_finalists():
    assert tr.verified_winner(VERIFICATION, None) == 3
    assert tr.verified_winner(VERIFICATION, 5.0) == 5  # 3's p99 upper bound 12 ms is over 5 ms
    assert tr.verified_winner(VERIFICATION, 0.5) is None
    as_stored = VERIFICATION | {"finalists": {str(n): f for n, f in VERIFICATION["finalists"].items()}}
    assert tr.verified_winner(as_stored, 2.0) == 0
    assert tr.verified_winner(VERIFICATION | {"max_p99_ms": 5.0, "winner": 0}, 5.0) == 0  # its own winner, as stored
    assert tr.verified_winner(None, None) is None


def _search_trials():
    return [
        _trial(0, 0, 10, 60.0, 1.0, {"concurrency": 1, "p": "c"}, baseline=True),
        _trial(3, 10, 25, 115.0, 9.0, {"p": "a"}, concurrency=4),  # a ramp trial: it chose concurrency 4
        _trial(5, 25, 40, 95.0, 4.0, {"concurrency": 1, "p": "b"}),
    ]


def test_a_search_is_valued_by_its_verified_pick_and_its_whole_time():
    trials = _search_trials()
    assert tr.search_seconds(trials, VERIFICATION) == {"sampling_s": 40, "verification_s": 30.0, "total_s": 70.0,
                                                       "verification_share": pytest.approx(30 / 70, abs=1e-4)}
    assert tr.search_seconds(trials, None)["verification_share"] == 0.0
    ka = st.params_key({"p": "a", "concurrency": 4})
    kb = st.params_key({"p": "b", "concurrency": 1})
    kc = st.params_key({"p": "c", "concurrency": 1})
    assert tr.point_key(trials[1]) == ka
    truth = {ka: _iv(104.0, 0.03, p99=9.5, p99_high=10.0), kb: _iv(100.0, p99=4.0, p99_high=4.4),
             kc: _iv(58.0, p99=1.0), ("best-overall",): _iv(108.0, p99=20.0)}
    best = {"overall": ("best-overall",), "loose": kb, "tight": kc}
    slas = {"overall": None, "loose": 5.0, "tight": 2.0}
    got = tr.evaluate_verified({"trials": trials, "verification": VERIFICATION}, truth, best, slas, t_grid_s=700.0)
    assert got["time"]["total_s"] == 70.0 and got["rounds"] == 3 and got["stopped"] == "converged"
    overall, loose, tight = (got["objectives"][k] for k in ("overall", "loose", "tight"))
    # overall: pick 3 (point a at concurrency 4), truth 104 of the verified best 108: reached, 70 s of 700 s.
    assert (overall["trial"], overall["ratio"], overall["reached"], overall["time_fraction"]) == (
        3, pytest.approx(104 / 108, abs=1e-4), True, 0.1)
    assert overall["truth_half_width"] == 0.03 and overall["verified_median"] == 110 and not overall["derived"]
    # loose: derived from the unconstrained search's finalists (5: p99 upper 4.5 ms <= 5), the best itself.
    assert (loose["trial"], loose["ratio"], loose["meets_sla"], loose["time_fraction"], loose["derived"]) == (
        5, 1.0, True, 0.1, True)
    # tight: finalist 0 (Triton's default, p99 1 ms) is the verified best under 2 ms itself: reached.
    assert (tight["trial"], tight["ratio"], tight["reached"]) == (0, 1.0, True)
    # Below 0.95 of the best: never, whatever the time.
    low = tr.evaluate_verified({"trials": trials, "verification": VERIFICATION}, truth | {("best-overall",): _iv(120.0)},
                               best, slas, 700.0)["objectives"]["overall"]
    assert low["ratio"] == pytest.approx(104 / 120, abs=1e-4) and not low["reached"] and low["time_fraction"] is None
    # Over the SLA by the truth's p99 upper bound: never, even at ratio 1.
    over = tr.evaluate_verified({"trials": trials, "verification": VERIFICATION},
                                truth | {kb: _iv(100.0, p99=4.0, p99_high=5.5)}, best, slas, 700.0)["objectives"]["loose"]
    assert over["ratio"] == 1.0 and over["meets_sla"] is False and over["time_fraction"] is None
    # No verification (or a pick the truth did not measure): never.
    none = tr.evaluate_verified({"trials": trials, "verification": None}, truth, best, slas, 700.0)
    assert none["objectives"]["overall"]["trial"] is None and none["objectives"]["overall"]["time_fraction"] is None
    unmeasured = tr.evaluate_verified({"trials": trials, "verification": VERIFICATION}, {kb: truth[kb]}, best, slas, 700.0)
    assert unmeasured["objectives"]["overall"]["in_truth"] is False and not unmeasured["objectives"]["overall"]["reached"]


def test_the_noise_of_the_truth():
    truth = tr.interleaved_truth(ROUNDS)
    noise = tr.truth_noise(truth, ROUNDS)
    assert noise["candidates"] == 3 and noise["rounds"] == 3
    hws = sorted(v["throughput"]["half_width"] for v in truth.values())
    assert noise["half_width_median"] == pytest.approx(hws[1], abs=1e-4) and noise["half_width_worst"] == hws[2]
    assert noise["max_over_min_median"] == pytest.approx(54 / 50, abs=1e-4)  # a 1.5, b 95/90 = 1.056, c 1.08
    assert noise["max_over_min_worst"] == 1.5
    assert noise["round_levels"][0] == pytest.approx(statistics.median([1.0, 90 / 93, 50 / 52]), abs=1e-4)
    assert tr.truth_noise({}, []) == {"candidates": 0}
    line = rp.noise_line(noise | {"seconds": 42.0})
    assert "3 points x 3 interleaved rounds" in line and "42 s" in line and "worst +-" in line


def test_the_verified_table_over_seeds_with_and_without_an_sla():
    trials = _search_trials()
    ka, kb = st.params_key({"p": "a", "concurrency": 4}), st.params_key({"p": "b", "concurrency": 1})
    truth = tr.interleaved_truth([{ka: _m(104, 9.0), kb: _m(100, 4.0)}, {ka: _m(106, 9.5), kb: _m(98, 4.2)},
                                  {ka: _m(105, 9.2), kb: _m(99, 4.1)}])
    for k, v in truth.items():
        v["config"] = f"cfg-{dict(k)['p']}"
    slas = {"overall": None, "loose": 5.0, "tight": 1.0}
    best = {name: tr.verified_best(truth, sla) for name, sla in slas.items()}
    assert best == {"overall": ka, "loose": kb, "tight": None}
    searches = []
    for seed, seconds in ((0, 30.0), (1, 60.0)):  # seed 1: sampling 40 s + verification 60 s
        ver = VERIFICATION | {"seconds": seconds}
        searches.append({"seed": seed, "search_sla": "none", "t_grid_s": 500.0, "trials": trials, "verification": ver})
    loose_ver = VERIFICATION | {"max_p99_ms": 5.0, "winner": 5, "seconds": 20.0}
    searches.append({"seed": 0, "search_sla": "loose", "t_grid_s": 500.0, "trials": trials, "verification": loose_ver})
    for s in searches:
        s["verified"] = tr.evaluate_verified(s, truth, best, slas, 500.0)
    rows = tr.summarize_verified(truth, best, slas, searches)
    overall, loose, tight = rows
    assert overall["seeds"] == [0, 1] and not overall["derived"]
    assert overall["time_fraction"] == {"median": pytest.approx(0.17), "min": 0.14, "max": 0.2, "reached": 2, "seeds": 2}
    assert overall["verification_share"]["median"] == pytest.approx((30 / 70 + 60 / 100) / 2, abs=1e-4)
    assert overall["best"]["config"] == "cfg-a" and overall["best"]["rounds"] == 3
    assert loose["seeds"] == [0] and not loose["derived"] and loose["time_fraction"]["median"] == pytest.approx(0.12)
    assert tight["derived"] and tight["best"] is None and tight["time_fraction"]["reached"] == 0
    table = rp.verified_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| objective | SLA p99 ms | verified best infer/s [95% interval] (noise) |")
    assert lines[2] == ("| overall | none | 105.0 [101.9, 108.2] (+-3.0%, 3 rounds) | 2 (unconstrained) | 0.170 | 0.140 "
                        "| 0.200 | 2 of 2 | 0.51 (0.43-0.60) | 1.000 / 1.000 | +-3.0% / +-3.0% | yes / yes "
                        "| 0.140 / 0.200 | 3 / 3 |")
    assert lines[3].startswith("| loose | 5.00 | 99.0 [") and "| 1 (given the SLA) | 0.120 |" in lines[3]
    assert lines[4].startswith("| tight | 1.00 | none meets it | 2 (unconstrained, judged on its finalists) | never |")


def test_parse_the_new_flags_and_make_the_heldout_model(tmp_path):
    args = se.parse_args(["--model", "heldout"])
    assert args.search_sla == ["none", "loose", "tight"] and args.truth_rounds == 3 and args.repeats == 0
    assert se.parse_args(["--model", "m", "--search-sla", "tight,none"]).search_sla == ["tight", "none"]
    with pytest.raises(SystemExit):
        se.parse_args(["--model", "m", "--search-sla", "strict"])
    assert se.main(["--model", "m.onnx", "--truth-rounds", "1", "--dry-run"]) == 2
    assert se.verify_settings(se.parse_args(["--model", "m.onnx", "--verify-share", "0.4"])).share == 0.4
    path = se.made_model("heldout", tmp_path)
    import onnx

    model = onnx.load(str(path))
    assert [len(model.graph.initializer), model.graph.initializer[0].dims] == [2, [128, 1024]]
    assert path.read_bytes() == se.made_model("heldout", tmp_path).read_bytes()  # made once, then reused


class _Study:
    def __init__(self, name):
        self.study_name = name


def test_the_truth_measures_the_grids_near_best_and_every_verified_pick():
    grid_trials = [
        _trial(10, 0, 1, 100.0, 9.0, {"concurrency": 4, "p": "a"}),
        _trial(11, 1, 2, 40.0, 1.0, {"concurrency": 1, "p": "b"}),
        _trial(12, 2, 3, 20.0, 0.5, {"concurrency": 1, "p": "c"}),
    ]
    search_trials = [
        _trial(0, 0, 1, 19.0, 0.5, {"concurrency": 1, "p": "c"}),  # a grid point: measured through the grid's trial
        _trial(3, 1, 2, 120.0, 9.0, {"p": "a"}, concurrency=16),  # outside the grid: through the search's trial
    ]
    ver = {"winner": 3, "max_p99_ms": None, "seconds": 1.0,
           "finalists": {3: _iv(110, p99=9.0), 0: _iv(19, p99=0.5)}}
    grid_study, search_study = _Study("grid"), _Study("search-seed0")
    args = se.parse_args(["--model", "m.onnx", "--truth-points", "1"])
    slas = {"loose": 1.0, "tight": 0.5}
    targets, configs = se.truth_targets(grid_trials, grid_study, slas,
                                        [{"trials": search_trials, "verification": ver, "study": search_study}], args)
    key = st.params_key
    assert targets == {key({"concurrency": 4, "p": "a"}): (grid_study, 10),
                       key({"concurrency": 1, "p": "b"}): (grid_study, 11),
                       key({"concurrency": 1, "p": "c"}): (grid_study, 12),
                       key({"concurrency": 16, "p": "a"}): (search_study, 3)}
    assert configs[key({"concurrency": 16, "p": "a"})] == "cfg3"


def test_the_report_states_the_noise_next_to_the_verified_figures():
    grid = _grid()
    truth = tr.interleaved_truth(ROUNDS)
    grid["noise"] = tr.truth_noise(truth, ROUNDS) | {"seconds": 12.0}
    grid["truth"] = [{"key": [list(kv) for kv in k], "outside_grid": k == C, "config": f"cfg{i}"} | v
                     for i, (k, v) in enumerate(truth.items())]
    report = {"model": "m", "grid_space": "small", "finished": "now", "machine": "vm", "command": "python x",
              "space_table": "knobs", "measure": {}, "grid": grid, "sla_quantiles": [0.5, 0.25], "searches": [],
              "budget_s": 5.0, "budget_fraction": 0.2, "search_sla": "none,tight", "summary": [], "truth_rounds": 3,
              "verify": {"share": 0.3, "budget_s": 1.5, "min_rounds": 3, "max_rounds": 7, "target_half_width": 0.05},
              "verified_summary": [{"objective": "overall", "sla_ms": None, "derived": False, "seeds": [0],
                                    "best": {"throughput": truth[A]["throughput"], "p99_ms": truth[A]["p99_ms"],
                                             "rounds": 3, "config": "cfg0", "key": []},
                                    "time_fraction": st.seed_stats([0.2]), "ratios": [1.0], "meets_sla": [True],
                                    "pick_half_widths": [0.1], "verification_share": st.seed_stats([0.3]),
                                    "total_fraction": [0.2], "rounds": [3]}]}
    markdown = rp.render_markdown(report)
    head = markdown.index("## Verified picks (the headline)")
    assert "Noise of this machine (truth: 3 points x 3 interleaved rounds" in markdown[head:]
    assert "share 0.3 of the budget = 1.5 s, 3-7 rounds, target +-5.0%" in markdown
    assert "| overall | none | 100.0 [" in markdown[head:] and "| 0.200 | 0.200 | 0.200 | 1 of 1 |" in markdown
    assert "## The truth, point by point" in markdown and "| cfg2 |" in markdown and "100 / 120 / 80 |" in markdown
