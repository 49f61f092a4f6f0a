"""Dataclasses whose methods' code is cached on disk: the same classes, never stale."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from generator import records
from generator.templating import CACHE_ENV

from conftest import ROOT

# A new process makes a class through generator.records and reports what it compiled.
SCRIPT = """
import json, sys
from dataclasses import field, replace
from generator import records

@records.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
    tags: tuple = ()
{extra}

p = Point(1, tags=("a",))
q = replace(p, y=2)
print(json.dumps({{
    "compiled": records.compiled,
    "repr": repr(q),
    "equal": p == Point(1, 0, ("a",)),
    "hash": hash(p) == hash(Point(1, 0, ("a",))),
}}))
"""


def run(cache, extra: str = "") -> dict:
    env = {"PATH": "/usr/bin:/bin", CACHE_ENV: str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(extra=extra)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout)


def test_a_second_process_compiles_nothing(tmp_path):
    first = run(tmp_path / "cache")
    assert (
        first["compiled"] >= 5
    )  # __init__, __repr__, __eq__, __hash__, __setattr__...
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        records.cache_file("__main__").name
    ]
    second = run(tmp_path / "cache")
    assert second == {**first, "compiled": 0}
    assert second["repr"] == "Point(x=1, y=2, tags=('a',))"
    assert second["equal"] and second["hash"]


def test_a_changed_class_is_compiled_afresh(tmp_path):
    run(tmp_path / "cache")
    (entry,) = (tmp_path / "cache").iterdir()
    size = entry.stat().st_size
    changed = run(
        tmp_path / "cache", "\n@records.dataclass\nclass Other:\n    z: int\n"
    )
    assert changed["compiled"] >= 3  # Other's methods; Point's come from the cache
    assert run(tmp_path / "cache", "")["compiled"] == 0
    # The module's file holds what its classes use now: Other's entries are gone.
    assert entry.stat().st_size == size


def test_a_module_name_that_is_no_file_name_is_not_cached(tmp_path):
    assert records.cache_file("../evil") is None
    assert records.cache_file("generator.matrix").name.endswith(
        "-generator.matrix.marshal"
    )


@settings(max_examples=300)
@given(
    st.text(alphabet="aZ_09.-/é \n", max_size=12)
    | st.from_regex(
        r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", fullmatch=True
    )
)
@example("")
@example("a.")
@example("a..b")
@example("\u0661")
def test_a_cacheable_module_name_is_dotted_ascii_identifiers(text):
    pattern = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
    assert records._module_name(text) == bool(re.fullmatch(pattern, text))


def test_a_broken_unwritable_or_untrusted_cache_only_costs_compiling(tmp_path):
    cache = tmp_path / "cache"
    first = run(cache)
    entry = next(cache.iterdir())
    for broken in (b"", b"\x00garbage", b"\xe3" * 40):
        entry.write_bytes(broken)
        assert run(cache) == first  # compiled again, and the file made whole
    assert run(cache)["compiled"] == 0
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run(blocker / "cache") == first  # cannot be created: no error
    cache.chmod(0o777)  # others could write code into it: neither read nor written
    entry.write_bytes(b"")
    assert run(cache) == first
    assert entry.read_bytes() == b""
    cache.chmod(0o700)
    assert run("off") == first
    assert not (ROOT / "off").exists()


def made_both_ways(cls_source: str):
    """The same class statement through dataclasses and through records."""
    classes = []
    for decorator in (dataclasses.dataclass, records.dataclass):
        namespace = {"dataclass": decorator, "field": dataclasses.field}
        exec(cls_source, namespace)
        classes.append(namespace["C"])
    return classes


@pytest.mark.parametrize("options", ["", "(frozen=True)", "(order=True)"])
def test_the_class_is_the_one_dataclasses_makes(options):
    source = (
        f"@dataclass{options}\nclass C:\n    a: int\n    b: list = field("
        "default_factory=list)\n    c: str = 'x'\n"
    )
    plain, cached = made_both_ways(source)
    assert repr(dataclasses.fields(plain)) == repr(dataclasses.fields(cached))
    for name in ("__init__", "__repr__", "__eq__", "__setattr__", "__lt__"):
        ours, theirs = getattr(cached, name, None), getattr(plain, name, None)
        if theirs is None or not hasattr(theirs, "__code__"):
            assert not hasattr(ours, "__code__")
            continue
        assert ours.__code__.co_code == theirs.__code__.co_code, name
        assert ours.__code__.co_consts == theirs.__code__.co_consts, name
    assert repr(cached(1)) == repr(plain(1)).replace("plain", "cached")
    assert cached(1) == cached(1, [], "x") and cached(1) != cached(2)
    if "frozen" in options:
        with pytest.raises(dataclasses.FrozenInstanceError):
            cached(1).a = 2
        assert hash(cached(1, ())) == hash(cached(1, ()))
    assert "exec" not in vars(dataclasses)  # dataclasses is left as it was


STRING_ANNOTATIONS = '''
@dataclass(frozen=True)
class C:
    """A class whose annotations are strings, as under `from __future__ import
    annotations`."""

    a: int
    b: tuple[str, ...] = ()
    c: "str | None" = None
    d: dict[str, int] = field(default_factory=dict)
'''


def test_string_annotations_come_out_as_dataclasses_leaves_them():
    plain, cached = made_both_ways(STRING_ANNOTATIONS)
    assert cached.__annotations__ == plain.__annotations__
    assert all(isinstance(v, str) for v in cached.__annotations__.values())
    assert repr(dataclasses.fields(cached)) == repr(dataclasses.fields(plain))
    assert cached.__init__.__annotations__ == plain.__init__.__annotations__
    assert cached.__doc__ == plain.__doc__
    assert cached(1, ("x",)) == cached(1, ("x",)) and cached(1).d == {}


@pytest.mark.parametrize(
    "body",
    [
        "    n: ClassVar[int] = 3\n    a: int = 0\n",
        "    n: InitVar[int] = 3\n    a: int = 0\n\n    def __post_init__(self, n):\n"
        "        object.__setattr__(self, 'a', n)\n",
        "    a: int = 0\n    _: KW_ONLY\n    b: int = 1\n",
    ],
)
def test_classvar_initvar_and_kw_only_still_mean_what_they_say(body):
    import types

    source = f'@dataclass(frozen=True)\nclass C:\n    """Doc."""\n\n{body}'
    classes = []
    for decorator in (dataclasses.dataclass, records.dataclass):
        # dataclasses looks the names up in the class's module: a real one.
        module = types.ModuleType("generator_records_case")
        module.__dict__.update(dataclass=decorator, field=dataclasses.field)
        sys.modules[module.__name__] = module
        try:
            exec(
                "from __future__ import annotations\nfrom typing import ClassVar\n"
                "from dataclasses import InitVar, KW_ONLY\n" + source,
                module.__dict__,
            )
        finally:
            del sys.modules[module.__name__]
        classes.append(module.C)
    plain, cached = classes
    assert isinstance(plain.__annotations__["a"], str)
    assert repr(dataclasses.fields(cached)) == repr(dataclasses.fields(plain))
    assert cached.__init__.__annotations__ == plain.__init__.__annotations__
    assert repr(cached()) == repr(plain())


def test_a_class_without_a_docstring_gets_the_one_dataclasses_writes():
    source = "@dataclass\nclass C:\n    a: int\n    b: 'list[str]' = None\n"
    plain, cached = made_both_ways(source)
    assert cached.__doc__ == plain.__doc__ and cached.__doc__.startswith("C(a: ")


def test_every_record_of_the_package_keeps_its_annotations_as_text():
    import importlib
    import pkgutil

    import generator

    seen = 0
    for info in pkgutil.walk_packages(generator.__path__, "generator."):
        if info.name == "generator.__main__":  # runs the command line
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if not (isinstance(value, type) and dataclasses.is_dataclass(value)):
                continue
            if value.__module__ != info.name:
                continue
            seen += 1
            for f in dataclasses.fields(value):
                assert isinstance(f.type, str), (value, f.name)
            assert all(isinstance(v, str) for v in value.__annotations__.values())
            init = value.__init__.__annotations__
            assert all(isinstance(v, str) for k, v in init.items() if k != "return")
    assert seen > 50
