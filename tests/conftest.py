"""Shared fixtures: the shipped example profiles and their matrices."""

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
needs_root = pytest.mark.skipif(not is_root, reason="needs root (network namespaces)")


def example(name: str):
    return load_profile(ROOT / "profiles" / f"{name}.yaml")


def example_matrix(name: str):
    return plan(example(name))


def profile_from(text: str):
    return parse_profile(text, "test.yaml")


@pytest.fixture(params=EXAMPLES)
def example_name(request) -> str:
    return request.param
