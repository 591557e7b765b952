"""What the terminal shows: live progress while searching, and the results table."""

from __future__ import annotations

import sys

import optuna
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner import results
from tuner.candidate import Candidate, describe, describe_steps
from tuner.verification.stats import figure_text, ratio_text

# Logs and CI pipes get a wide console instead of rich's 80-column default for non-terminals.
console = Console() if sys.stdout.isatty() else Console(width=180)


class RichReporter:
    """Progress bar with the best trial so far, and one line per finished trial."""

    def __init__(self, max_p99_ms: float | None):
        self.max_p99_ms = max_p99_ms
        self.progress = Progress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.description}"), console=console)
        self.task = None
        self.best: tuple[float, float, int] | None = None  # throughput, p99, trial number

    def search_started(self, study: optuna.Study, total: int, done: int) -> None:
        if done:
            console.print(f"resuming study [bold]{study.study_name}[/]: {done} of {total} trials already done")
        if done >= total:
            return
        self.progress.start()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            self._note(trial)
        self.task = self.progress.add_task(self._best_text(), total=total, completed=done)

    def note(self, message: str) -> None:
        console.print(f"[dim]{message}[/]", highlight=False)

    def trial_started(self, number: int, candidate: Candidate) -> None:
        console.print(f"[dim]trial {number}: {describe(candidate)}[/]")

    def trial_finished(self, trial: optuna.trial.FrozenTrial) -> None:
        attrs = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            m = attrs["measurement"]
            timing = (f"repeat of trial {attrs['repeat_of']}" if "repeat_of" in attrs
                      else f"load {attrs['load_s']:.1f} s, measure {attrs['measure_s']:.1f} s")
            ok = "" if not self.max_p99_ms or m["p99_ms"] <= self.max_p99_ms else " [yellow](over SLA)[/]"
            console.print(f"  -> {m['throughput']:.1f} infer/s, p99 {m['p99_ms']:.1f} ms{ok}  [dim]({timing})[/]")
        else:
            state = "REJECTED" if "rejected" in attrs else trial.state.name
            kind = f" ({attrs['failure']})" if attrs.get("failure") not in (None, "candidate") else ""
            console.print(f"  -> [red]{state}[/]{kind}: {attrs.get('error', 'no reason recorded')}")
        if "retried" in attrs:
            console.print(f"  [dim](tried twice: the first attempt failed on {attrs['retried']})[/]", highlight=False)
        self._note(trial)
        if self.task is not None:
            self.progress.update(self.task, advance=1, description=self._best_text())

    def _note(self, trial: optuna.trial.FrozenTrial) -> None:
        m = trial.user_attrs.get("measurement")
        if trial.state != optuna.trial.TrialState.COMPLETE or not m:
            return
        if self.max_p99_ms and m["p99_ms"] > self.max_p99_ms:
            return
        if self.best is None or m["throughput"] > self.best[0]:
            self.best = (m["throughput"], m["p99_ms"], trial.number)

    def _best_text(self) -> str:
        if self.best is None:
            return "best: none yet" + (" under the SLA" if self.max_p99_ms else "")
        throughput, p99, number = self.best
        return f"best: {throughput:.1f} infer/s, p99 {p99:.1f} ms (trial {number})"

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def _cost(value) -> str:
    """A cost per million inferences (three significant digits), in the currency of the price per hour."""
    return "-" if value is None or pd.isna(value) else f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"


def results_table(frame: pd.DataFrame, max_p99_ms: float | None, limit: int = 15) -> Table:
    """The best completed trials; a cost column when a price per hour is known, and which worker
    (on which host) measured each trial when several did."""
    done = results.completed(frame).sort_values("throughput", ascending=False)
    if max_p99_ms:
        done = done.assign(ok=done.p99_ms <= max_p99_ms).sort_values(["ok", "throughput"], ascending=False)
    priced, workers = results.priced(frame), results.several_workers(frame)
    table = Table(title=f"Best trials{f' (SLA p99 <= {max_p99_ms} ms)' if max_p99_ms else ''}")
    columns = ["trial", "config", "infer/s", "p50 ms", "p99 ms", "queue ms", "infer ms", "load s", "first ms", "SLA"]
    columns += ["cost / 1M"] * priced + ["worker"] * workers
    for col in columns:
        table.add_column(col, justify="left" if col in ("config", "worker") else "right")
    for _, r in done.head(limit).iterrows():
        sla = "-" if not max_p99_ms else ("ok" if r.p99_ms <= max_p99_ms else "over")
        label = describe(r.to_dict()) + (" [dim](default)[/]" if r.baseline else "")
        load = "-" if pd.isna(r.load_s) else f"{r.load_s:.1f}"
        first = "-" if pd.isna(r.first_request_ms) else f"{r.first_request_ms:.0f}"
        cells = [str(r.number), label, f"{r.throughput:.1f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                 f"{r.queue_ms:.1f}", f"{r.compute_infer_ms:.1f}", load, first, sla]
        cells += [_cost(r.cost_per_million)] * priced + [r.worker or "-"] * workers
        table.add_row(*cells)
    return table


def summary(frame: pd.DataFrame, max_p99_ms: float | None, verified: dict | None = None) -> str:
    """Tuned against Triton's default config, under the SLA when there is one: verified figures
    (tuner.verification) when the study has them for this SLA, then the search's single draws."""
    tuned = results.best(frame, max_p99_ms)
    default = results.best(frame, max_p99_ms, baseline=True)
    failed = int((frame.state == "FAIL").sum())
    rejected = int(frame.rejected.notna().sum())
    lines = [f"{len(frame)} trials: {len(results.completed(frame))} completed, {failed} failed"
             + (f", {rejected} rejected by the accuracy guard" if rejected else "")]
    if tuned is None:
        lines.append("no completed trial meets the SLA" if max_p99_ms else "no completed trial")
        return "\n".join(lines)
    if verified is not None and verified.get("max_p99_ms") == max_p99_ms:
        lines += verified_lines(frame, verified)
        lines.append("single draws of the search (they steer the sampler; read the verified figures above):")
    lines.append(f"tuned:   trial {tuned.number}: {tuned.throughput:.1f} infer/s, p99 {tuned.p99_ms:.1f} ms"
                 f"{_cost_text(tuned)}  ({describe(tuned.to_dict())})")
    if default is not None:
        lines.append(f"default: trial {default.number}: {default.throughput:.1f} infer/s, p99 {default.p99_ms:.1f} ms"
                     f"{_cost_text(default)}")
        lines.append(f"tuned / default throughput: {tuned.throughput / default.throughput:.2f}x")
    else:
        lines.append("default: no default-config trial " + ("meets the SLA" if max_p99_ms else "completed"))
    return "\n".join(lines)


def _cost_text(row: pd.Series) -> str:
    cost = row.get("cost_per_million")
    return "" if cost is None or pd.isna(cost) else f", {_cost(cost)} per million inferences"


def verified_lines(frame: pd.DataFrame, verified: dict) -> list[str]:
    """The verification stage's result: each finalist's median and 95 % interval over the rounds."""
    rounds = verified["rounds"]
    lines = [f"verified: {len(verified['finalists'])} finalists measured again in {rounds} interleaved "
             f"rounds ({verified['stopped']}, {verified['seconds']:.0f} s); "
             + ("medians with 95 % intervals" if rounds > 1 else
                "one round only: single draws with no interval (give verification a larger share or fewer leaders)")]
    rows = frame.set_index("number")
    for number, figures in verified["finalists"].items():
        role = ("winner " if number == verified["winner"] else "") + ("default" if number == verified["default"] else "")
        sla = "" if verified.get("max_p99_ms") is None else ("  meets SLA" if figures["meets_sla"] else "  misses SLA")
        floor = "" if figures.get("meets_floor", True) else "  under the throughput floor"
        cost = figures.get("cost_per_million")
        cost = "" if cost is None else f", {cost:.4g} per million inferences"
        throughput = figure_text(figures["throughput"], "infer/s", spread=True)
        lines.append(f"  trial {number} {role.strip() or ''}: {throughput}, "
                     f"p99 {figure_text(figures['p99_ms'], 'ms', spread=True)}{cost}{sla}{floor}  "
                     f"({describe(rows.loc[number].to_dict())})")
    if verified["winner"] is None:
        lines.append("  no finalist meets the SLA on its verified p99 (upper bound): raise the SLA or search longer")
        return lines
    ratio = verified.get("vs_default")
    if verified["p_best"] is not None:
        lines.append(f"  P(winner is best) over resampled rounds: {verified['p_best']:.2f}")
    if ratio is not None:
        lines.append(f"  {ratio_text(ratio)}")
    elif verified["winner"] == verified["default"]:
        lines.append("  Triton's default is the verified winner: no configuration beat it on this machine")
    return lines


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None or pd.isna(value) else format(value * scale, spec)


def runtime_table(frame: pd.DataFrame, max_p99_ms: float | None) -> Table:
    """Best trial under the SLA per backend and precision, with utilisation and accuracy figures
    (and its cost per million inferences when a price per hour is known)."""
    per_runtime = results.best_per_runtime(frame, max_p99_ms)
    default = results.best(frame, max_p99_ms, baseline=True)
    priced = results.priced(frame)
    table = Table(title="Best per backend and precision" + (f" (p99 <= {max_p99_ms} ms)" if max_p99_ms else ""))
    columns = ["backend", "precision", "trials", "failed", "rejected", "best", "infer/s", "p99 ms", "vs default"]
    columns += ["cost / 1M"] * priced + ["CPU %", "GPU %", "GPU GiB", "max rel err", "CTC agree"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("backend", "precision") else "right")
    for _, r in per_runtime.iterrows():
        ratio = "-" if default is None or pd.isna(r.throughput) else f"{r.throughput / default.throughput:.2f}x"
        table.add_row(r.backend, r.precision, str(r.trials), str(r.failed), str(r.rejected),
                      "-" if pd.isna(r.best_trial) else str(int(r.best_trial)), _fmt(r.throughput, ".1f"),
                      _fmt(r.p99_ms, ".1f"), ratio, *[_cost(r.cost_per_million)] * priced,
                      _fmt(r.cpu_utilization, ".0f", 100), _fmt(r.gpu_utilization, ".0f", 100),
                      _fmt(r.gpu_memory_gb, ".2f"), _fmt(r.max_rel_error, ".2e"), _fmt(r.ctc_agreement, ".3f"))
    return table


def steps_table(study: optuna.Study, frame: pd.DataFrame, max_p99_ms: float | None,
                verified: dict | None = None) -> Table | None:
    """A pipeline's steps, where its time goes: each composing model's settings in the pick (the
    verified winner, else the best single draw under the SLA) and its queue and compute time and
    share of the pipeline's server time, beside Triton's default pipeline (the repository as
    given). None for a single model's study."""
    if "steps" not in frame or not frame.steps.notna().any():
        return None
    winner = verified.get("winner") if verified and verified.get("max_p99_ms") == max_p99_ms else None
    pick = frame[frame.number == winner].iloc[0] if winner is not None else results.best(frame, max_p99_ms)
    default = results.best(frame, max_p99_ms, baseline=True)
    if pick is None:
        return None
    title = f"Where the time goes: trial {pick.number} (" + ("verified winner" if winner is not None else "best draw")
    table = Table(title=title + (f") against the default, trial {default.number}" if default is not None else ")"))
    for col in ("step", "settings", "queue ms", "compute ms", "share", "default: settings", "queue ms", "compute ms",
                "share"):
        table.add_column(col, justify="left" if "settings" in col or col == "step" else "right")
    shares = study.trials[int(pick.number)].user_attrs.get("step_shares") or {}
    base = study.trials[int(default.number)].user_attrs.get("step_shares") or {} if default is not None else {}
    base_steps = default.steps if default is not None and isinstance(default.steps, dict) else {}

    def figures(found: dict) -> list[str]:
        if not found:
            return ["-", "-", "-"]
        return [f"{found['queue_us'] / 1000:.1f}", f"{found['compute_us'] / 1000:.1f}", f"{found['share'] * 100:.0f} %"]

    for name, settings in pick.steps.items():
        mine = describe_steps({name: settings})[len(name) + 1:]
        theirs = describe_steps({name: base_steps[name]})[len(name) + 1:] if name in base_steps else "-"
        table.add_row(name, mine, *figures(shares.get(name, {})), theirs, *figures(base.get(name, {})))
    return table
