"""The end-of-run summary totals anonymization leaks (issue #11) without Ray."""

from __future__ import annotations

import pytest
from rich.console import Console

from relshard.pipelines.runner import RunSummary


def test_leak_totals_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from relshard import cli

    summary = RunSummary(output="out", run_id="r1", samples_written=18,
                         rejected={"anonymization_leak": 2, "corrupt": 1},
                         leaks={"fixed": 3, "kept": 1})
    assert summary.leak_rejects == 2
    assert summary.leak_rate == pytest.approx((3 + 1 + 2) / (18 + 2))
    assert RunSummary(output="out", run_id="r2").leak_rate == 0.0
    console = Console(width=200, record=True)
    monkeypatch.setattr(cli, "out", console)
    cli._print_summary(summary)
    text = console.export_text()
    row = next(line for line in text.splitlines() if "anonymization leaks" in line)
    assert ("6 (30.0% of annotated samples): 3 fixed by a re-ask, 1 kept with a warning, "
            "2 rejected") in row
