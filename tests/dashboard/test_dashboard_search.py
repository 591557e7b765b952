"""The dashboard over a study made by a real search: the trials table, the verified finalists, the SLA
filter, the download."""

import io
import zipfile

import pytest
from google.protobuf import text_format
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from tritonclient.grpc import model_config_pb2

from tuner import results, verification

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
    # Not the SLA the search verified for: the page offers the best single draw and says so.
    assert next(m for m in at.metric if m.label == "p99 ms (single draw)").value == f"{expected.p99_ms:.2f}"
    command = searched.study.trials[int(expected.number)].user_attrs["perf_analyzer_cmd"]
    assert command in [c.value for c in at.code]


def test_the_verified_section_shows_the_searchs_verification(searched, dashboard):
    found = verification.stored(searched.study)
    assert found is not None and found["max_p99_ms"] == 500.0 and found["winner"] is not None
    at = dashboard(searched.storage)
    table = next(d.value for d in at.dataframe if "meets SLA" in d.value.columns)
    assert sorted(table.trial) == sorted(found["finalists"])
    assert table.trial.iloc[0] == found["winner"] and table.role.iloc[0].startswith("winner")
    assert any(c.value.startswith(f"{found['rounds']} interleaved rounds over {len(found['finalists'])} finalists")
               for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["trial"] == str(found["winner"])  # the study's own SLA: the verified winner is offered
    winner = found["finalists"][found["winner"]]["throughput"]["median"]
    assert metrics["infer/s (verified)"] == f"{winner:.1f}"
    assert any('"name":"each round\'s draw"' in c.proto.spec for c in at.get("plotly_chart"))


def test_the_download_is_the_verified_winners_model_repository(searched, dashboard, downloads):
    winner = verification.stored(searched.study)["winner"]  # verified under the study's own SLA
    best = results.trials_frame(searched.study).set_index("number", drop=False).loc[winner]
    at = dashboard(searched.storage)
    measured = _config(downloads[f"dash-trial{best.number}-measured.zip"])  # the form the search measured
    assert measured.name == "mlp" and measured.backend == "python"
    assert measured.max_batch_size == best.max_batch_size and measured.instance_group[0].count == best.instances

    at.radio(key="form-dash").set_value("native").run()
    native = _config(downloads[f"dash-trial{best.number}-native.zip"])
    assert native.name == "mlp" and native.platform == "onnxruntime_onnx"
    assert native.max_batch_size == best.max_batch_size and native.instance_group[0].count == best.instances

    at.radio(key="form-dash").set_value("adapter").run()
    adapter = _config(downloads[f"dash-trial{best.number}-adapter.zip"])
    assert adapter.backend == "python" and adapter.instance_group[0].count == best.instances
