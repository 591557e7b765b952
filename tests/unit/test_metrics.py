import pytest

from tuner.measure.metrics import parse, summarize

SNAPSHOT = """# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.25
nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 2147483648
nv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 1073741824
nv_gpu_power_usage{gpu_uuid="GPU-a"} 300
nv_gpu_power_usage{gpu_uuid="GPU-b"} 100
nv_cpu_utilization 0.75
nv_cpu_memory_used_bytes 4294967296
"""


def test_prometheus_text_is_parsed_per_label_set():
    metrics = parse(SNAPSHOT)
    assert metrics["nv_gpu_utilization"] == {'gpu_uuid="GPU-a"': 0.5, 'gpu_uuid="GPU-b"': 0.25}
    assert metrics["nv_cpu_utilization"] == {"": 0.75}


def test_window_summary_averages_utilisation_and_peaks_memory():
    later = SNAPSHOT.replace("0.5\n", "1.0\n").replace("2147483648", "3221225472")
    summary = summarize([parse(SNAPSHOT), parse(later)])
    assert summary.samples == 2
    assert summary.gpu_utilization == pytest.approx((0.75 + 1.25) / 2 / 2)  # mean over time and GPUs
    assert summary.gpu_memory_gb == pytest.approx(4.0)  # peak of the per-snapshot sum (3 + 1 GiB)
    assert summary.gpu_power_w == pytest.approx(400)
    assert summary.cpu_utilization == pytest.approx(0.75) and summary.cpu_memory_gb == pytest.approx(4.0)


def test_a_cpu_only_server_has_no_gpu_figures():
    summary = summarize([parse("nv_cpu_utilization 0.5\n")])
    assert summary.gpu_utilization is None and summary.gpu_memory_gb is None and summary.gpu_power_w is None
    assert summarize([]).samples == 0
