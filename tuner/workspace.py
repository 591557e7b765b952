"""The files of one study on disk, and the sample inputs every stage shares.

Public: the search, the export and the benchmarks use the same folder layout and the same seeded
inputs, so a figure measured by one can be reproduced by another.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import TunerError
from tuner.experiment import Experiment
from tuner.measure import perf_analyzer
from tuner.model_source import ModelSource

Sample = dict[str, np.ndarray]
MAX_SLOTS = 64  # workers of one study on one host


@dataclass(frozen=True)
class Workspace:
    """Files of one study: the model repository the server reads, logs, load inputs."""

    root: Path

    @classmethod
    def of(cls, results_dir: Path, study_name: str) -> "Workspace":
        """The study's folder, results_dir/<study>; a name that would lead outside results_dir is refused."""
        root = Path(os.path.normpath(results_dir / study_name))
        if root.parent != Path(os.path.normpath(results_dir)):
            raise TunerError(f"study {study_name!r} would put its files outside {results_dir}; "
                             "a study name is letters, digits, '.', '_' or '-'")
        return cls(root)

    def worker(self, slot: int) -> "Workspace":
        """The folder of one worker of the study: the study's own for the first (slot 0), so a
        single search keeps today's layout; workers/<slot> for the others."""
        return self if slot == 0 else Workspace(self.root / "workers" / str(slot))

    @property
    def repository(self) -> Path:
        return self.root / "repository"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def input_data(self) -> Path:
        return self.root / "perf_inputs.json"

    @property
    def warmup_dir(self) -> Path:
        return self.root / "warmup"

    def csv(self, number: int, suffix: str = "") -> Path:
        return self.root / "perf" / f"trial_{number:04d}{'_' + suffix if suffix else ''}.csv"


@contextmanager
def claim_slot(study_ws: Workspace) -> Iterator[tuple[int, Workspace]]:
    """The first worker slot of the study no other running search on this host holds, and its
    workspace, held (an exclusive lock on a file of the study's folder) until the block ends.
    Each worker thus stages models, inputs and warmup files in a folder of its own; the lock dies
    with the process, however it ends."""
    study_ws.root.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = open(study_ws.root / f".worker-{slot}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            ws = study_ws.worker(slot)
            ws.root.mkdir(parents=True, exist_ok=True)
            yield slot, ws
        finally:
            handle.close()  # releases the lock
        return
    raise TunerError(f"{MAX_SLOTS} searches of this study already run on this host; stop one first")


def data_seed(exp: Experiment) -> int:
    """The seed of the sample inputs: `measure.data_seed`, else the sampler's seed."""
    if exp.measure.data_seed is not None:
        return exp.measure.data_seed
    return exp.seed or 0


def load_samples(source: ModelSource, exp: Experiment) -> list[Sample]:
    """The study's fixed sample inputs (seeded): perf_analyzer's data; the first one warms up."""
    return source.sample_inputs(np.random.default_rng(data_seed(exp)), exp.measure.samples)


def calibration_samples(source: ModelSource, exp: Experiment, precision: str) -> list[Sample]:
    """int8 calibration inputs, from their own seed so they are not the accuracy-check inputs."""
    if precision != "int8":
        return []
    return source.sample_inputs(np.random.default_rng(data_seed(exp) + 1), exp.accuracy.calibration_samples)


def write_warmup_files(folder: Path, sample: Sample) -> None:
    """model_warmup's input_data_file per input: the raw bytes of one request's tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in sample.items():
        (folder / name).write_bytes(np.ascontiguousarray(value).tobytes())


def prepare_inputs(source: ModelSource, ws: Workspace, exp: Experiment) -> list[Sample]:
    """Write the load inputs and the warmup files (from the first sample); return the samples."""
    samples = load_samples(source, exp)
    perf_analyzer.write_input_data(ws.input_data, source.signature, samples)
    write_warmup_files(ws.warmup_dir, samples[0])
    return samples
