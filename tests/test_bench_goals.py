"""`make bench` ends with the speed goals, each judged from the figures the
benchmarks wrote (benchmarks/goals.py): the verdicts follow the figures."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT


@pytest.fixture
def goals(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import goals

    return goals


def plan_figures(*ratios):
    base = {"seconds": 0.1, "cpu_seconds": 0.1}
    runs = [{"command": "gcp plan", "seconds": 0.5, "cpu_seconds": 0.5}]
    runs += [
        {"command": f"p{i} generate iptables", "seconds": r / 10, "cpu_seconds": r / 10}
        for i, r in enumerate(ratios)
    ]
    return {"baseline": base, "runs": runs}


def run_figures(large, stop):
    def run(cloud, step, ratio, exit=0, size=10000):
        seconds = ratio / 10
        return {"cloud": cloud, "step": step, "size": size, "exit": exit} | {
            "seconds": seconds,
            "cpu_seconds": seconds,
        }

    return {
        "baseline": {"seconds": 0.1, "cpu_seconds": 0.1},
        "runs": [
            run("gcp", "generate gcp-firewall", large),
            run("gcp", "generate gcp-firewall", 9.0, size=1000),
            run("aws", "generate terraform-aws", stop, exit=1),
            run("aws", "generate iptables", 1.5),
            run("aws", "plan", 9.0),
        ],
        "aerleon": [
            {"size": 10, "cpu_seconds": 1.0, "rulegen_cpu": 0.2},
            {"size": 1000, "cpu_seconds": 3.0, "rulegen_cpu": 0.3},
        ],
    }


def verdicts(rows):
    return {row["goal"]: row["met"] for row in rows}


def test_each_goal_is_met_exactly_when_its_worst_figure_is_within(goals):
    stages = {"rows": [{"cloud": "aws", "stage": "plan", "worst": 1.1}]}
    rows = goals.goals(plan_figures(1.2, 1.29), run_figures(2.9, 1.9), stages)
    assert set(verdicts(rows).values()) == {True}
    assert "1.29x (p1 generate iptables); 2 of 2 within" in rows[0]["measured"]
    assert rows[1]["measured"].startswith("2.90x (gcp generate gcp-firewall)")
    assert rows[2]["measured"].startswith("1.90x (terraform-aws, exit 1)")

    stages["rows"].append({"cloud": "gcp", "stage": "emit", "worst": 1.3})
    rows = goals.goals(plan_figures(1.2, 1.31), run_figures(3.1, 2.1), stages)
    assert set(verdicts(rows).values()) == {False}
    assert rows[0]["measured"].endswith("1 of 2 within")
    assert rows[3]["measured"].startswith("1.30x (gcp emit); 1 of 2 within")


def test_a_missing_figure_is_not_measured_rather_than_met(
    goals, tmp_path, capsys, monkeypatch
):
    (tmp_path / "plan.json").write_text(json.dumps(plan_figures(1.1)))
    (tmp_path / "run.json").write_text("{broken")
    monkeypatch.setattr(sys, "argv", ["goals.py", str(tmp_path)])
    goals.main()
    out = capsys.readouterr().out
    assert "1 of 4 goals met" in out
    assert out.count("not measured") == 4  # three goals and Aerleon


def test_aerleon_is_compared_in_cpu_time(goals):
    lines = goals.aerleon_lines(run_figures(1, 1))
    assert "rulegen 5.0x faster than Aerleon" in lines[0]
    assert "before: 4.7x" in lines[0]
    assert "rulegen 10.0x faster" in lines[1]
