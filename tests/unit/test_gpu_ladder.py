"""benchmarks/gpu_ladder.py runs end to end on the CPU with the tiny model (the GPU run is the lead's)."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def test_the_ladder_prints_every_step_with_positive_figures(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_ladder", ROOT / "benchmarks" / "gpu_ladder.py")
    ladder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = ladder  # dataclasses look their module up there
    spec.loader.exec_module(ladder)
    out = tmp_path / "ladder.md"
    text = ladder.main(["--model", "wenet-tiny", "--device", "cpu", "--seconds", "0.5", "--streams", "2",
                        "--batch", "2", "--halves", "bf16", "--compile", "off", "--latency-batches", "1,2",
                        "--latency-seconds", "0.2", "--pool", "16", "--buckets", "100,200,300",
                        "--out", str(out)])
    assert out.read_text() == text
    ladder_part = text.split("## Latency")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in ladder_part.splitlines() if line.startswith("| ")}
    for step in ("fp32", "tf32", "bf16", "+ sdpa attention", "+ length buckets"):
        cells = [c.strip() for c in rows[step].strip("|").split("|")]
        utt_per_s, tflops, padded = float(cells[6]), float(cells[9]), float(cells[10])
        assert utt_per_s > 0 and tflops > 0 and padded >= 1.0, rows[step]
    assert "skipped: cuda_graphs: CUDA graphs need a CUDA device" in rows["+ CUDA graphs"]
    assert "skipped: not requested (--halves)" in rows["fp16"]
    latency = [line for line in text.split("## Latency")[1].splitlines() if re.match(r"\| (fp32|\+ length) ", line)]
    assert len(latency) == 4 and all(float(line.split("|")[4]) > 0 for line in latency)
