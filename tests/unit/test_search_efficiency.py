"""The search-efficiency benchmark's pure logic, on hand-made records: no server."""

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
