"""`bench.storm` end to end at toy size: it runs, every join is answered, the report has
its columns. Figures are for `make bench`; nothing here checks a timing."""

from __future__ import annotations

from pathlib import Path

from bench.storm import join_table, run_join_storm


def test_a_small_join_storm_is_measured_and_reported(tmp_path: Path) -> None:
    storm = run_join_storm(members=30, over=1.0, announce_up_to=10, workers=2, log_dir=tmp_path)
    assert storm.failed == 0, storm
    assert storm.join_p50_ms is not None and storm.join_p99_ms is not None
    # The first ten know each other (45 peer-joins), the twenty after them are audience.
    assert storm.notifications >= 45, storm
    assert storm.server_cpu_s > 0
    table = join_table([storm])
    for column in ("members", "CPU per join ms", "join p99 ms", "notifications", "generator"):
        assert column in table
    assert "| 30 | 1 | past 10 |" in table
