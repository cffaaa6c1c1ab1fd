"""The soak's row of `make bench`'s goals (benchmarks/run.py): flat RSS counts only over the whole soak and
with the worker's end state read, because a worker that stalled, or a run cut short, looks flat too."""

from __future__ import annotations

from typing import Any

from benchmarks.run import goals


def soak_row(**soak: Any) -> dict[str, Any]:
    base = {"seconds": 600.0, "stopped_early": None, "events_sent": 1_000, "events_consumed": 900,
            "events_behind_at_end": 100, "worker_rss_mb": {"median": 200.0}, "worker_slope_mb_per_min": 0.1}
    rows = [g for g in goals({"soak": {**base, **soak}}) if g["text"].startswith("soak")]
    assert len(rows) == 1
    return rows[0]


def test_a_flat_soak_with_its_end_state_is_met_and_says_how_far_behind_it_ended() -> None:
    row = soak_row()
    assert row["met"] is True and row["target"] == round(0.1 * 200 / 60, 3)
    assert "100 events behind at the end" in row["text"]


def test_a_climb_past_a_tenth_of_the_rss_per_hour_is_not_met() -> None:
    assert soak_row(worker_slope_mb_per_min=0.4)["met"] is False


def test_without_the_end_state_a_flat_curve_is_not_measured() -> None:
    row = soak_row(events_consumed=None, events_behind_at_end=None, worker_slope_mb_per_min=-0.8)
    assert row["met"] is None and row["not_measured"] == "the worker's end state was not read"


def test_a_soak_stopped_early_is_not_measured_and_says_why() -> None:
    why = "after 420 s: 1.9 GiB of memory left, the broker holding 12.0 GiB (every record)"
    row = soak_row(stopped_early=why, seconds=420.0)
    assert row["met"] is None and row["not_measured"] == f"stopped early {why}"
