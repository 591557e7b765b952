"""The dashboard over a study made by a real search: the trials table, the SLA filter, the download."""

import io
import zipfile

import pytest
from google.protobuf import text_format
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from tritonclient.grpc import model_config_pb2

from tuner import results

pytestmark = pytest.mark.integration


@pytest.fixture
def downloads(monkeypatch) -> dict[str, bytes]:
    """Every file the app hands to a download button, by file name (AppTest keeps only their URLs)."""
    files: dict[str, bytes] = {}
    register = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        files[filename] = path_or_data
        return register(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


def _config(archive: bytes) -> model_config_pb2.ModelConfig:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert {"REPORT.md", "mlp/1/model.onnx"} <= set(z.namelist())
        return text_format.Parse(z.read("mlp/config.pbtxt").decode(), model_config_pb2.ModelConfig())


def test_the_trials_table_has_one_row_per_trial(searched, dashboard):
    at = dashboard(searched.storage)
    table = next(d.value for d in at.dataframe if "baseline" in d.value.columns)
    assert list(table.number) == [t.number for t in searched.study.trials]
    assert f"All trials ({len(searched.study.trials)})" in [s.value for s in at.subheader]
    assert at.number_input(key="sla-dash").value == 500.0  # the study's own SLA


def test_the_sla_filter_picks_the_best_trial_under_it(searched, dashboard):
    frame = results.trials_frame(searched.study)
    sla = float(results.completed(frame).p99_ms.median())  # some trials over it, some within
    expected = results.best(frame, sla)
    at = dashboard(searched.storage)
    at.number_input(key="sla-dash").set_value(sla).run()
    assert next(m for m in at.metric if m.label == "trial").value == str(expected.number)
    assert next(m for m in at.metric if m.label == "p99 (ms)").value == f"{expected.p99_ms:.2f}"
    command = searched.study.trials[int(expected.number)].user_attrs["perf_analyzer_cmd"]
    assert command in [c.value for c in at.code]


def test_the_download_is_the_best_trials_model_repository(searched, dashboard, downloads):
    best = results.best(results.trials_frame(searched.study), 500.0)
    at = dashboard(searched.storage)
    native = _config(downloads[f"dash-trial{best.number}-native.zip"])
    assert native.name == "mlp" and native.platform == "onnxruntime_onnx"
    assert native.max_batch_size == best.max_batch_size and native.instance_group[0].count == best.instances

    at.radio(key="form-dash").set_value("adapter").run()
    adapter = _config(downloads[f"dash-trial{best.number}-adapter.zip"])
    assert adapter.backend == "python" and adapter.instance_group[0].count == best.instances
