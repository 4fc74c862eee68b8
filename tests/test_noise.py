"""The machine-noise meter behind the scenarios' noise figures."""

from __future__ import annotations

import os

import pytest
from tidal.bench import noise


def test_each_core_is_measured_in_both_phases() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    figures = noise.measure(cpus, seconds=0.3)
    assert [f.cpu for f in figures] == cpus
    for f in figures:
        assert f.seconds == 0.3
        # Each sleep returns no earlier than asked and the tail is ordered.
        assert 0.0 <= f.wake_p50_ms <= f.wake_p99_ms <= f.wake_p999_ms <= f.wake_max_ms
        assert f.wake_over_5ms >= 0
        # Gaps are a share of the running phase, each shorter than it.
        assert 0.0 <= f.run_lost < 1.0
        assert f.run_max_gap_ms < 300.0
        assert f.run_gaps_over_1ms >= 0


def test_a_core_it_cannot_run_on_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"cpu 4096 failed: .*Invalid argument"):
        noise.measure([4096], seconds=0.1)


def test_round_trips_between_two_cores_are_timed() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pair = [cpus[0], cpus[-1]]
    trip = noise.round_trip(pair, seconds=0.3)
    assert trip.cpus == pair
    # Back to back for 0.3 s: many trips, none longer than the phase.
    assert trip.trips > 100
    assert 0.0 < trip.p50_ms <= trip.p99_ms <= trip.p999_ms <= trip.max_ms < 300.0
    assert 0 <= trip.over_1ms <= trip.trips


def test_a_round_trip_needs_two_cores() -> None:
    with pytest.raises(ValueError, match="two cores"):
        noise.round_trip([0], seconds=0.1)
