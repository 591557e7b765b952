"""Concurrency found per configuration: a short ramp instead of a sampled guess.

A deployment's throughput rises with the client's concurrency until the server saturates, and
its p99 rises with it. Sampling the concurrency as one more knob spends a whole trial (load and
all) on each guess; the ramp measures one deployment at concurrency 1, 2, 4, ... on a single load
and stops as soon as a step no longer pays: throughput up by less than `min_gain`, or p99 over
the SLA (more concurrency only adds queueing from there).
"""

from __future__ import annotations

from typing import Callable, Sequence

from tuner.measure.perf_analyzer import Measurement


def ramp(measure_at: Callable[[int], Measurement], ladder: Sequence[int], max_p99_ms: float | None = None,
         min_gain: float = 0.03, floor: int = 1) -> list[Measurement]:
    """Measure up the ladder (ascending concurrencies or request rates) until a step stops paying;
    every point measured. Under a request rate, a rate the server cannot sustain ends the ramp too.

    Below `floor` a flat step does not end the ramp: a dynamic batcher's throughput can stall
    while too few requests are in flight to fill a batch, then climb again once they do (measured:
    4155, 4740, 3591, 4263, 6472, 8160 infer/s at concurrency 1 to 32 for one instance, max batch 32).
    """
    curve: list[Measurement] = []
    for level in sorted(set(ladder)):
        point = measure_at(level)
        best = max((p.throughput for p in curve), default=0.0)
        curve.append(point)
        if max_p99_ms is not None and point.p99_ms > max_p99_ms:
            break  # over the SLA: a higher load queues more, never less
        if not point.sustained:
            break  # the offered rate outruns the server: higher rates only grow the queue
        if curve[:-1] and level >= floor and point.throughput < best * (1 + min_gain):
            break  # saturated: doubling the load no longer moves throughput
    return curve


def pick(curve: Sequence[Measurement], max_p99_ms: float | None = None, headroom: float = 0.0) -> Measurement:
    """The point a trial reports: the highest throughput within the SLA (lower p99 breaks ties) among
    the sustained ones (under a request rate: the highest sustained rate whose p99 meets the SLA);
    where none qualifies, the lowest-p99 one (the trial then violates its constraint).

    With `headroom`, points whose p99 stays that share under the SLA come first: one draw's p99 moved
    +12 % (CPU) and +18 % (H200 ensemble) when measured again, so a pick on the SLA's edge fails its
    verification; a point only within the SLA itself is picked when no point has the headroom."""
    if not curve:
        raise ValueError("empty curve")
    for limit in ((max_p99_ms * (1 - headroom), max_p99_ms) if max_p99_ms is not None else (None,)):
        within = [p for p in curve if (limit is None or p.p99_ms <= limit) and p.sustained]
        if within:
            return max(within, key=lambda p: (p.throughput, -p.p99_ms))
    return min(curve, key=lambda p: p.p99_ms)


def mean(points: Sequence[Measurement]) -> Measurement:
    """Several measurements of the same point as one: every figure averaged."""
    if not points:
        raise ValueError("nothing to average")
    fields = points[0].as_dict()
    averaged = {k: sum(p.as_dict()[k] for p in points) / len(points) for k in fields
                if k not in ("concurrency", "request_rate")}
    return Measurement(concurrency=points[0].concurrency, request_rate=points[0].request_rate, **averaged)


def batching_floor(instances: int, max_batch_size: int, dynamic_batching: bool) -> int:
    """The concurrency below which a ramp may not call a deployment saturated: enough requests in
    flight to fill every instance's batch when the dynamic batcher is on, one per instance if not."""
    return instances * max(max_batch_size, 1) if dynamic_batching else instances
