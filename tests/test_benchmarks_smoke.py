"""The benchmark scripts still run end to end (benchmarks are scripts: no timing is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import instructions

from .conftest import broker_url

REPO = Path(__file__).resolve().parent.parent
FIGURES = {"1", "2", "3", "4", "5", "6", "7", "8"}


@pytest.mark.broker
@pytest.mark.timeout(300)
def test_quick_benchmark_run_writes_numbers_for_every_figure(tmp_path: Path) -> None:
    """`benchmarks/run.py --quick` exits 0 and its results.json has numbers for figures 1-8."""
    broker_url("redis")  # skips (or fails on CI) like every broker test
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(tmp_path),
         "--redis-db", "15"],  # not the default 14, so a real run meanwhile is left alone
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["figures"]) == FIGURES
    for figure, rows in results["figures"].items():
        measured = [row for row in rows if row["values"]]
        assert measured, f"figure {figure} has no measured row"
        for row in measured:
            numbers = [*row["values"], row["median"], row["min"], row["max"]]
            assert all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers), row
    assert results["machine"]["redis-server"][0].isdigit()
    assert "cores (logical / physical)" in results["machine"]
    table = (tmp_path / "results.md").read_text()
    assert all(f"| {figure}. " in table for figure in FIGURES)

    counted = [row for row in results["figures"]["1"] if row["unit"] == "instructions"]
    if instructions.available():  # .ci/run installs valgrind
        assert len(counted) == 1 and counted[0]["values"][0] > 100_000, counted
    else:
        assert not counted and "valgrind is not installed" in table
