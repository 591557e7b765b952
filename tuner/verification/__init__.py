"""The verification stage: the study's finalists measured again in interleaved, shuffled rounds
until the winner's throughput is known to about +-5 % (or the stage's budget is spent).

Single draws steer the sampler; the figures a user sees are these verified ones, with intervals.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import optuna
import pandas as pd

from tuner import backends, results
from tuner.candidate import Candidate
from tuner.errors import TrialError
from tuner.experiment import Experiment
from tuner.model_source import ModelSource
from tuner.server import Server
from tuner.study import finished_count
from tuner.trial.artifact import prepare
from tuner.trial.deploy import deploy, package
from tuner.trial.loadtest import perf_runner, warm_up
from tuner.verification import finalists
from tuner.verification.stats import figure_text
from tuner.workspace import Sample, Workspace

ATTR = "verification"  # the study's user attribute that holds the stage's result
UNFINISHED = "unfinished"  # `stopped` of a stage stored after each round, until it ends


def resumable(study: optuna.Study) -> dict | None:
    """The stored verification, when it is one that never ended (its search was killed between
    rounds) of the study's trials as they are now: its rounds are kept and more are measured."""
    found = stored(study)
    if found is None or found.get("stopped") != UNFINISHED or found.get("trials_seen") != finished_count(study):
        return None
    return found if found["rounds_measured"] else None


def stored(study: optuna.Study) -> dict | None:
    """The study's verification, with trial numbers as ints again (JSON keeps them as strings)."""
    found = study.user_attrs.get(ATTR)
    if not found:
        return None
    found = dict(found)
    found["finalists"] = {int(n): v for n, v in found["finalists"].items()}
    found["rounds_measured"] = [{int(n): v for n, v in r.items()} for r in found["rounds_measured"]]
    if found["rounds"] < 2:  # stored before one round had no interval: its [x, x] and P(best) 1.0 mean nothing
        none = {"low": None, "high": None, "half_width": None}
        found["finalists"] = {n: v | {"throughput": v["throughput"] | none, "p99_ms": v["p99_ms"] | none}
                              for n, v in found["finalists"].items()}
        found["p_best"] = None
        if found.get("vs_default"):
            found["vs_default"] = found["vs_default"] | none | {"significant": None}
    return found


class Verifier:
    """Measures one finalist per call, reloaded from scratch: the config and model files its trial
    measured, then perf_analyzer at the concurrency its trial found."""

    def __init__(self, study: optuna.Study, exp: Experiment, source: ModelSource, server: Server, ws: Workspace,
                 samples: list[Sample]):
        self.study, self.exp, self.source, self.server, self.ws, self.samples = study, exp, source, server, ws, samples
        self.server_backends = tuple(server.backends())

    def __call__(self, number: int, round_number: int) -> dict:
        attrs = self.study.trials[number].user_attrs
        candidate = Candidate.from_dict(attrs["candidate"])
        if not self.server.is_alive():
            self.server.start()
        form = backends.serving_form(backends.get(candidate.backend), candidate.precision, self.server_backends)
        files = prepare(self.source, self.exp, candidate, self.samples, form).files
        # Unload first: Triton keeps a model whose config is unchanged, and a round must reload it.
        self.server.unload(self.source.name)
        deploy(self.server, self.source, package(self.source.name, attrs["config_pbtxt"], files, self.ws.warmup_dir),
               self.samples[0])
        def perf_at(spec):
            return perf_runner(self.source.name, self.server.grpc_url, self.server.metrics_url, spec,
                               self.ws.input_data,
                               lambda suffix: self.ws.root / "verify" / f"r{round_number}_t{number}_{suffix}.csv")

        warm_up(perf_at, candidate.load_level, self.exp.verify.warmup_s)
        run = perf_at(self.exp.measure)(candidate.load_level, "")
        return {"throughput": run.measurement.throughput, "p99_ms": run.measurement.p99_ms,
                "p50_ms": run.measurement.p50_ms, "command": run.command, "unstable": run.unstable}


def run(study: optuna.Study, exp: Experiment, measure: Callable[[int, int], dict],
        note: Callable[[str], None] = lambda message: None) -> dict | None:
    """Rounds over the finalists until the winner is known to `exp.verify.target_half_width`,
    `max_rounds` are done, or the budget runs out; stored in the study and returned."""
    spec = exp.verify
    frame = results.trials_frame(study)
    earlier = stored(study)
    incumbent = (earlier["winner"] if earlier is not None and earlier.get("max_p99_ms") == exp.max_p99_ms
                 else None)
    chosen = finalists.choose(frame, exp.max_p99_ms, spec.leaders, incumbent)
    resumed = resumable(study)
    if resumed is not None:  # the same finalists as the rounds already measured
        chosen = sorted(resumed["rounds_measured"][0], key=lambda n: n != resumed["winner"])
    if not chosen:
        return None
    baseline = frame[frame.baseline & frame.number.isin(chosen)]
    default = int(baseline.number.iloc[0]) if not baseline.empty else None
    # Each finalist's cost is at the price of the machine kind its trial was measured on.
    prices = {n: study.trials[n].user_attrs.get("price_per_hour", exp.price_per_hour) for n in chosen}
    budget = spec.budget_s(exp.timeout_s)
    costs = {n: _round_cost(frame, n, exp) for n in chosen}
    fitted = chosen if resumed is not None else finalists.fit(chosen, costs, budget, spec.min_rounds,
                                                              {chosen[0], incumbent, default})
    dropped = [n for n in chosen if n not in fitted]
    chosen = fitted
    rounds: list[dict[int, dict]] = [] if resumed is None else resumed["rounds_measured"]
    note(f"verifying {len(chosen)} finalists (trials {', '.join(map(str, chosen))}) in interleaved rounds"
         + (f"; trials {', '.join(map(str, dropped))} left out: {spec.min_rounds} rounds of every finalist "
            f"would not fit the stage's {budget:.0f} s" if dropped else "")
         + (f"; resumed: {len(rounds)} rounds were measured before the search stopped" if rounds else ""))
    order = random.Random(None if exp.seed is None else exp.seed + len(rounds))
    started = time.monotonic()
    earlier_s = resumed["seconds"] if resumed is not None else 0.0  # stored; the budget is this run's
    done_before = len(rounds)

    def decide() -> dict:
        return finalists.decide(rounds, exp.max_p99_ms, default, exp.seed or 0,
                                min_throughput=exp.min_throughput, prices=prices, objective=exp.objective)

    stopped, decision = "max_rounds", decide() if rounds else None
    for attempt in range(done_before, done_before + spec.max_rounds * 2):  # a failed round is repeated, a few times
        if len(rounds) >= spec.max_rounds:
            break
        round_started = time.monotonic()
        shuffled = chosen[:]
        order.shuffle(shuffled)
        measured = {}
        for number in shuffled:
            try:
                measured[number] = measure(number, attempt)
            except TrialError as exc:  # one failed reload or run: the round is repeated, not lost
                note(f"  round {len(rounds) + 1}: trial {number} failed ({exc}); repeating the round")
                break
        else:
            rounds.append({n: measured[n] for n in chosen})
            decision = decide()
            note(_round_line(decision, len(rounds)))
            # Stored after every round: a search killed now keeps the rounds, and resumes after them.
            _store(study, exp, decision, UNFINISHED, earlier_s + time.monotonic() - started, rounds)
            winner = decision["winner"]
            half_width = None if winner is None else decision["finalists"][winner]["throughput"]["half_width"]
            if len(rounds) >= spec.min_rounds and half_width is not None and half_width <= spec.target_half_width:
                stopped = "converged"
                break
        # Another round would end past the budget: stop here.
        if time.monotonic() - started + (time.monotonic() - round_started) > budget:
            stopped = "budget"
            break
    if decision is None:
        return None
    _store(study, exp, decision, stopped, earlier_s + time.monotonic() - started, rounds)
    return stored(study)


def _store(study: optuna.Study, exp: Experiment, decision: dict, stopped: str, seconds: float,
           rounds: list[dict[int, dict]]) -> None:
    result = decision | {"stopped": stopped, "seconds": round(seconds, 1),
                         "max_p99_ms": exp.max_p99_ms, "trials_seen": finished_count(study),
                         "rounds_measured": [{str(n): v for n, v in r.items()} for r in rounds]}
    result["finalists"] = {str(n): v for n, v in decision["finalists"].items()}
    study.set_user_attr(ATTR, result)


def _round_cost(frame: pd.DataFrame, number: int, exp: Experiment) -> float:
    """Seconds one round spends on a finalist: its reload (as long as its trial's load), the
    warm-up, and a measurement of perf_analyzer's three windows at least, plus its start-up."""
    load = frame.loc[frame.number == number, "load_s"].iloc[0]
    load = 10.0 if pd.isna(load) else float(load)  # none recorded: a trial from older code
    return load + exp.verify.warmup_s + 3 * exp.measure.interval_ms / 1000 + 2.0


def _round_line(decision: dict, rounds: int) -> str:
    winner = decision["winner"]
    if winner is None:
        return f"  round {rounds}: no finalist meets the SLA on its verified p99 yet"
    throughput = figure_text(decision["finalists"][winner]["throughput"], "infer/s", spread=True)
    p_best = "" if decision["p_best"] is None else f", P(best) {decision['p_best']:.2f}"
    return f"  round {rounds}: leader trial {winner}, {throughput}{p_best}"
