"""The schema check compiled ahead of time is exactly the schema file's."""

from __future__ import annotations

import importlib.util
import json

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
    digest = profile._schema_digest(profile._validation_schema())
    assert profile_validator.SCHEMA_SHA256 == digest


def test_the_shipped_module_is_used_while_the_schema_matches(monkeypatch):
    assert profile._validator() is profile_validator.validate
    monkeypatch.setattr(profile_validator, "SCHEMA_SHA256", "0" * 64)
    fresh = profile._validator()
    assert fresh is not profile_validator.validate
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        fresh({"name": 1})


def outcome(validate, data):
    try:
        validate(data)
        return None
    except fastjsonschema.JsonSchemaValueException as exc:
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
    runtime = fastjsonschema.compile(profile._validation_schema())
    # Both fill in defaults: each gets its own copy.
    copy = json.loads(json.dumps(data))
    assert outcome(profile_validator.validate, data) == outcome(runtime, copy)
    assert data == copy
