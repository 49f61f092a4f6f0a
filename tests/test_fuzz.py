"""A profile fuzzer with YAML features: tags, anchors and aliases, merge keys, deep
nesting, odd scalars, encodings, on top of mutated example profiles.

Fixed seed and budget (derandomized); RULEGEN_FUZZ_EXAMPLES raises the budget for a
longer run. Every input must give either a result or clean problems: no uncaught
exception, and nothing written when `generate` fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PROFILES
from generator.cli import main
from generator.profile import ProfileError, load_profile

BUDGET = int(os.environ.get("RULEGEN_FUZZ_EXAMPLES", "300"))
BASES = [p.read_text() for p in PROFILES]

ODD = [
    "!!int false",
    "!!timestamp acme",
    "!custom x",
    "!!python/name:os.system",
    "!!python/object/apply:os.system [id]",
    "!!binary aGk=",
    "! plain",
    "&a [*a]",
    "*undefined",
    "&b {x: 1}",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "1e400",
    "~",
    "yes",
    "off",
    "2024-01-01",
    "2024-99-99",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    '"\\u0000"',
    '"a\\nb"',
    '"\\x85"',
    "'tab\there'",
    "[]",
    "{}",
    "[[[[[[]]]]]]",
    "9" * 5000,
    "-" + "9" * 30,
    "'fe80::1%eth0'",
    "10.0.0.0/33",
    "10.0.0.1/8",
    "::/0",
    "0.0.0.0/0",
    "'::ffff:10.0.0.1'",
    "|\n  multi\n  line",
    ">-\n  folded",
    "[65535, 1024]",
    "[0, 70000]",
    "null",
    "'é'",
    '"\\U0001F600"',
    "x" * 300,
    "[10.0.0.0/16, 10.0.0.0/16]",
    "{kubernetes_nodes: [10.0.0.0/8]}",
]
scalars = st.sampled_from(ODD) | st.text(max_size=20).map(repr)


@st.composite
def mutated(draw) -> bytes:
    lines = draw(st.sampled_from(BASES)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                [
                    "value",
                    "insert",
                    "delete",
                    "duplicate",
                    "anchor",
                    "merge",
                    "nest",
                    "bomb",
                    "tag",
                    "indent",
                ]
            )
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        line = lines[i] if lines else ""
        key, colon, _ = line.partition(":")
        if kind == "value" and colon:
            lines[i] = f"{key}: {draw(scalars)}"
        elif kind == "insert":
            indent = " " * draw(st.sampled_from([0, 2, 4]))
            name = draw(st.sampled_from(["x", "name", "peers", "vcs", "<<", "? a"]))
            lines.insert(i, f"{indent}{name}: {draw(scalars)}")
        elif kind == "delete" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, line)
        elif kind == "anchor" and colon:
            j = draw(st.integers(0, len(lines) - 1))
            other, other_colon, _ = lines[j].partition(":")
            lines[i] = f"{line.rstrip()} " if line.rstrip().endswith(":") else line
            lines[i] = f"{key}: &a{lines[i][len(key) + 1:]}"
            if other_colon:
                lines[j] = f"{other}: *a"
        elif kind == "merge" and colon:
            indent = len(line) - len(line.lstrip())
            lines.insert(
                i,
                " " * indent
                + f"<<: {draw(st.sampled_from(['*a', '{}', '[*a]', '{dns_servers: [10.0.0.2]}', '1']))}",
            )
        elif kind == "nest":
            depth = draw(st.integers(0, 1200))
            lines.append(f"x: {'[' * depth}{']' * depth}")
        elif kind == "bomb":
            lines.append("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]")
            for n in range(draw(st.integers(1, 9))):
                me, prev = chr(98 + n), chr(97 + n)
                lines.append(f"{me}: &{me} [{', '.join(['*' + prev] * 9)}]")
        elif kind == "tag" and colon:
            tag = draw(st.sampled_from(["!!str", "!!int", "!!map", "!!seq", "!x", "!"]))
            lines[i] = f"{key}: {tag} {line.partition(':')[2].strip()}"
        elif kind == "indent" and lines:
            lines[i] = " " * draw(st.integers(0, 7)) + line.lstrip()
    text = "\n".join(lines) + "\n"
    encoding = draw(
        st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1", "junk"])
    )
    if encoding == "junk":
        data = text.encode()
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return text.encode(encoding, errors="replace")


FUZZ = settings(
    max_examples=BUDGET,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@FUZZ
@given(mutated())
def test_the_loader_never_raises_anything_but_problems(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_bytes(data)
        try:
            load_profile(path)
        except ProfileError as exc:
            assert exc.problems and all(
                isinstance(p, str) and p.startswith(str(path)) and len(p) < 1000
                for p in exc.problems
            ), exc.problems


@settings(FUZZ, max_examples=max(BUDGET // 5, 20))
@given(mutated())
def test_generate_fails_cleanly_and_writes_nothing_on_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "p.yaml", Path(tmp) / "out"
        path.write_bytes(data)
        result = CliRunner().invoke(main, ["generate", str(path), "-o", str(out)])
        assert result.exception is None or isinstance(
            result.exception, SystemExit
        ), result.exc_info
        assert "Traceback" not in result.output
        if result.exit_code != 0:
            assert result.stderr.startswith("error: ") or "error: " in result.stderr
            assert not out.exists() or not any(out.iterdir())
        else:
            assert (out / ".rulegen-manifest.json").is_file()


@pytest.mark.deep
@settings(FUZZ, max_examples=max(BUDGET // 2, 20))
@given(mutated())
def test_fast_and_full_schema_validators_agree_on_fuzzed_profiles(data):
    import fastjsonschema
    from jsonschema import Draft202012Validator

    from generator.profile import _read_yaml, _validation_schema

    try:
        parsed, _ = _read_yaml(data.decode("utf-8"), "p.yaml")
    except (UnicodeDecodeError, ProfileError):
        return
    schema = _validation_schema()
    full = not any(True for _ in Draft202012Validator(schema).iter_errors(parsed))
    try:
        fastjsonschema.compile(schema)(parsed)
        fast = True
    except fastjsonschema.JsonSchemaValueException:
        fast = False
    assert fast == full


PATHS = st.sampled_from(
    [
        "t/a.tf",
        "t/b.tf",
        "u/c.tf",
        "t",
        "",
        ".",
        "..",
        "../victim.txt",
        "t/../../victim.txt",
        "/tmp/victim.txt",
        "t/./a.tf",
        "t//a.tf",
        "t\\a.tf",
        "t/a.tf\x00",
        ".rulegen-manifest.json",
        "t/.rulegen-journal.json",
        "x" * 5000,
        "link/a.tf",
    ]
)
HASHES = st.sampled_from(["0" * 64, "a" * 63, "", "x"]) | st.just("HASH")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | HASHES,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
entries = st.dictionaries(
    PATHS,
    HASHES
    | st.fixed_dictionaries(
        {
            "sha256": HASHES | st.lists(HASHES, max_size=2),
            "target": st.sampled_from(["t", "u", "", "x"]),
        }
    )
    | json_values,
    max_size=6,
)


@settings(FUZZ, max_examples=max(BUDGET // 2, 20))
@given(entries, st.booleans(), st.booleans())
def test_a_hostile_manifest_never_reaches_outside_the_folder(files, force, journal):
    """The manifest and the journal are untrusted input: whatever they say, nothing
    outside the folder is read, written or removed, and only WriteError escapes."""
    import json

    from generator.writer import JOURNAL, MANIFEST, WriteError, compare, digest
    from generator.writer import write_tree

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out, victim = root / "out", root / "victim.txt"
        outside = root / "elsewhere"
        outside.mkdir()
        victim.write_text("precious\n")
        (out / "t").mkdir(parents=True)
        (out / "t" / "a.tf").write_text("precious\n")
        (out / "link").symlink_to(outside)
        (outside / "a.tf").write_text("precious\n")
        text = json.dumps(
            {
                "files": json.loads(
                    json.dumps(files).replace("HASH", digest("precious\n"))
                )
            }
        )
        (out / (JOURNAL if journal else MANIFEST)).write_text(text)
        generated = {"t/a.tf": "new\n", "u/c.tf": "c\n"}
        try:
            changes = compare(out, generated)
            if not changes.problems:
                write_tree(out, generated, changes, force)
        except WriteError:
            pass
        assert victim.read_text() == "precious\n"
        if not force:  # no hash the folder holds makes a hand-written file rulegen's
            assert (out / "t" / "a.tf").read_text() == "precious\n"
        assert sorted(p.name for p in outside.iterdir()) == ["a.tf"]
        assert (outside / "a.tf").read_text() == "precious\n"
        assert sorted(p.name for p in root.iterdir()) == [
            "elsewhere",
            "out",
            "victim.txt",
        ]
