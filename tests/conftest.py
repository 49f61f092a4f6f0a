"""Shared fixtures (the shipped example profiles and their matrices) and the test tiers.

A test that needs something beyond Python carries a marker saying what (registered in
pyproject.toml: netns, docker, browser, terraform, checkov, cfnlint, wheel, deep). `--tier check` (what
`make check` runs) leaves those tests out and says which tiers it left out and why;
the default, `--tier all`, runs everything (`make test`, CI). Under pytest-xdist the
slow tiers are handed out first, so that no long test starts last.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from generator.planner import plan
from generator.profile import load_profile, parse_profile

ROOT = Path(__file__).resolve().parent.parent
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))
EXAMPLES = [p.stem for p in PROFILES]

is_root = os.geteuid() == 0

# The writer's record of each output folder goes to a folder of the test run's own,
# not the user's state folder (subprocesses inherit it).
if "RULEGEN_STATE_DIR" not in os.environ:
    import tempfile

    _STATE = tempfile.TemporaryDirectory(prefix="rulegen-test-state-")
    os.environ["RULEGEN_STATE_DIR"] = _STATE.name

# Markers of the tiers `--tier check` leaves out, slowest first: the order in which
# xdist workers are handed them.
TIERS = (
    "checkov",
    "wheel",
    "terraform",
    "netns",
    "docker",
    "deep",
    "cfnlint",
    "browser",
)
LEFT_OUT = pytest.StashKey[dict]()  # tier -> how many tests `--tier check` left out


def needs_root(test):
    """A test that builds network namespaces: the netns tier, skipped unless root."""
    test = pytest.mark.skipif(not is_root, reason="needs root (network namespaces)")(
        test
    )
    return pytest.mark.netns(test)


def example(name: str):
    return load_profile(ROOT / "profiles" / f"{name}.yaml")


def example_matrix(name: str):
    return plan(example(name))


def profile_from(text: str):
    return parse_profile(text, "test.yaml")


@pytest.fixture(params=EXAMPLES)
def example_name(request) -> str:
    return request.param


def pytest_addoption(parser):
    parser.addoption(
        "--tier",
        choices=("check", "all"),
        default="all",
        help="check: leave out the tests marked with a tier ("
        + ", ".join(TIERS)
        + "); all (default): run every test",
    )


def tiers_of(item) -> list[str]:
    return [t for t in TIERS if item.get_closest_marker(t)]


def pytest_collection_modifyitems(config, items):
    if config.getoption("tier") == "check":
        kept, left = [], {}
        for item in items:
            tiers = tiers_of(item)
            if tiers:
                left.setdefault(tiers[0], []).append(item)
            else:
                kept.append(item)
        if left:
            config.hook.pytest_deselected(items=[i for t in left.values() for i in t])
            items[:] = kept
        counts = {tier: len(left.get(tier, ())) for tier in TIERS}
        config.stash[LEFT_OUT] = counts
        if hasattr(config, "workeroutput"):  # an xdist worker: tell the controller
            config.workeroutput["tiers_left_out"] = counts
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # Slow tiers first (a stable sort: each worker collects the same order).
        rank = {tier: n for n, tier in enumerate(TIERS)}
        items.sort(key=lambda i: min((rank[t] for t in tiers_of(i)), default=len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    counts = getattr(node, "workeroutput", {}).get("tiers_left_out")
    if counts is not None:
        node.config.stash[LEFT_OUT] = counts


def pytest_terminal_summary(terminalreporter, config):
    if config.getoption("tier") != "check":
        return
    counts = config.stash.get(LEFT_OUT, {})
    why = dict(line.partition(":")[::2] for line in config.getini("markers"))
    terminalreporter.write_sep("-", "tier check: left out (make test runs them)")
    for tier in TIERS:
        terminalreporter.write_line(
            f"{tier}: {counts.get(tier, '?')} tests;{why.get(tier, '').rstrip()}"
        )
