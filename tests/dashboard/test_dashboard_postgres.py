"""The dashboard over a study in a real PostgreSQL (scripts/postgres.sh), as several workers fill it:
it follows the study live, shows which worker measured each trial and what a million inferences cost.

The server is the tests' own (tests/postgres_server.py); the test gets a database of its own,
dropped after it.
"""

import pytest

from dashboard_studies import make_study, measured

psycopg = pytest.importorskip("psycopg", reason="tuner's postgres extra (scripts/setup.sh installs it)")


def _trials_table(at):
    return next(d.value for d in at.dataframe if "max_rel_error" in d.value.columns or "duration_s" in d.value.columns)


def test_the_dashboard_follows_a_postgresql_study_of_two_workers_with_its_cost(postgres_database, dashboard):
    a = {"worker": "host-a/w0", "host": "host-a", "hardware": "cpu x2", "price_per_hour": 3.6}
    b = {"worker": "host-b/w0", "host": "host-b", "hardware": "cpu x2", "price_per_hour": 3.6}
    study = make_study(postgres_database, "shared", [measured(1000.0, 5.0, baseline=True, **a),
                                            measured(2000.0, 6.0, instances=2, **b)])
    at = dashboard(postgres_database)
    assert f"study storage: `{postgres_database}`" in [c.value for c in at.caption]
    assert next(m for m in at.metric if m.label == "trial").value == "1"
    assert any(c.value.startswith("Cost: 0.5 per million inferences at 2000.0 infer/s") for c in at.caption)
    table = _trials_table(at)
    assert list(table.columns[:5]) == ["number", "status", "cost_per_million", "worker", "host"]
    assert list(table.worker) == ["host-a/w0", "host-b/w0"]
    assert list(table.cost_per_million) == pytest.approx([1.0, 0.5])

    # A worker finishes another trial: the page's next rerun (live: every few seconds) shows it.
    trial = study.ask()
    for key, value in measured(3600.0, 7.0, instances=3, **a)["attrs"].items():
        trial.set_user_attr(key, value)
    study.tell(trial, [3600.0, 7.0])
    at.run()
    assert not at.exception
    assert list(_trials_table(at).number) == [0, 1, 2]
    assert next(m for m in at.metric if m.label == "trial").value == "2"
    assert any(c.value.startswith("Cost: 0.2778 per million inferences") for c in at.caption)
