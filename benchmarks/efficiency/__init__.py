"""The search-efficiency benchmark (benchmarks/search_efficiency.py is its one command).

    space   the benchmark's presets, and its grid from tuner's knob table (tuner.space.grid)
    stats   measured records: best within an SLA, the run's pick over time, time to 95%, time split
    truth   the grid as ground truth, and a search valued against it
    report  markdown tables and the report (pure formatting)
    runner  a real tritonserver: the grid's fixed points through tuner's TrialRunner, the searches

Everything but `runner` is pure (no server, no study) and unit-tested in
tests/unit/test_search_efficiency.py. The benchmark uses tuner's public API only.
"""
