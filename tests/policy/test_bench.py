"""The policy benchmark runs end to end (its numbers are reported, not asserted)."""

from __future__ import annotations

import pytest

from aragora.policy import bench


async def test_measure_returns_a_time_for_each_kind_of_check() -> None:
    result = await bench.measure(checks=50)
    assert result.checks == 50
    assert min(result.cached_us, result.uncached_us, result.uncached_no_rules_us) > 0


def test_main_prints_the_three_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--checks", "20"])
    out = capsys.readouterr().out
    assert "cached" in out and "uncached (2 rules)" in out and "(20 checks each)" in out
