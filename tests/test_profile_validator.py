"""The schema check compiled ahead of time is exactly the schema file's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import fastjsonschema
import pytest
import yaml

from conftest import PROFILES, ROOT
from generator import profile, profile_validator
from test_profile import CASES


def compile_script():
    spec = importlib.util.spec_from_file_location(
        "compile_schema", ROOT / "scripts" / "compile_schema.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_module_is_what_the_schema_file_compiles_to():
    expected = compile_script().source()
    shipped = (ROOT / "generator" / "profile_validator.py").read_text()
    assert shipped == expected, "stale: run python scripts/compile_schema.py"
    assert profile_validator.SCHEMA_SHA256 == profile._schema_digest()


def test_the_shipped_module_is_used_while_the_schema_matches(monkeypatch):
    shipped = (profile_validator.validate, profile_validator.JsonSchemaValueException)
    assert profile._validator() == shipped
    monkeypatch.setattr(profile_validator, "SCHEMA_SHA256", "0" * 64)
    fresh, error = profile._validator()
    assert fresh is not profile_validator.validate
    assert error is fastjsonschema.JsonSchemaValueException
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fresh({"name": 1})


def test_the_shipped_module_does_not_import_fastjsonschema():
    code = "import sys, generator.profile_validator; print('fastjsonschema' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False", out.stderr


def test_a_failure_is_told_with_fastjsonschemas_own_message():
    data = {"name": "x1", "cloud": "aws"}
    with pytest.raises(profile_validator.JsonSchemaValueException):
        profile_validator.validate(json.loads(json.dumps(data)))
    try:
        fastjsonschema.compile(profile._validation_schema())(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        expected = exc.message
    assert "must contain ['access', 'network', 'peers', 'server_version']" in expected
    assert profile._first_problem(data) == expected


ERRORS = (
    fastjsonschema.JsonSchemaValueException,
    profile_validator.JsonSchemaValueException,
)


def outcome(validate, data):
    try:
        validate(data)
        return None
    except ERRORS as exc:
        return exc.message


@pytest.mark.parametrize(
    "text",
    [c[1] for c in CASES] + [p.read_text() for p in PROFILES],
    ids=[c[0] for c in CASES] + [p.stem for p in PROFILES],
)
def test_shipped_and_runtime_compiled_agree(text):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        pytest.skip("not YAML: no schema check")
    runtime = fastjsonschema.compile(
        profile._validation_schema(), detailed_exceptions=False
    )
    # Both fill in defaults: each gets its own copy.
    copy = json.loads(json.dumps(data))
    assert outcome(profile_validator.validate, data) == outcome(runtime, copy)
    assert data == copy
