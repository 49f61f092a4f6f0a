"""`rulegen snapshot` and `rulegen diff`: files, formats, exit codes, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import ROOT, example_matrix
from markdown_it import MarkdownIt

from generator.cli import main
from generator.diff import FileDiff, Report, compare, render_markdown
from generator.emitters import TARGETS, targets_for
from generator.matrix import Matrix
from generator.snapshot import SCHEMA_PATH, side_from_profile
from generator.writer import MANIFEST, read_manifest

V42 = ROOT / "profiles" / "aws-private-vpn.yaml"
V3 = ROOT / "profiles" / "aws-private-vpn-3.yaml"
V410 = ROOT / "profiles" / "aws-private-vpn-4.10.yaml"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def generated(profile, folder, *extra) -> dict[str, str]:
    """What `rulegen generate` writes for a profile: {path: text}, manifest aside."""
    result = run("generate", profile, "-o", folder, *extra)
    assert result.exit_code == 0, result.output
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


# --- snapshot ---------------------------------------------------------------


def test_snapshot_is_valid_stable_and_complete(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run("snapshot", V42, "-o", a).exit_code == 0
    assert run("snapshot", V42, "-o", b).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    data = json.loads(a.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(data)
    assert list(data)[0] == "format" and data["format"] == 1
    assert Matrix.from_dict(data["matrix"]) == example_matrix("aws-private-vpn")
    # The hashes are those `generate` records for the files it writes.
    generated(V42, tmp_path / "out")
    assert data["files"] == read_manifest(tmp_path / "out")
    # Every default target is either hashed or named with the reason it is not.
    emitted = {p.split("/", 1)[0] for p in data["files"]}
    assert emitted | set(data["not_emitted"]) == {t.name for t in targets_for("aws")}


def test_snapshot_to_stdout_equals_the_file(tmp_path):
    out = tmp_path / "s.json"
    run("snapshot", V42, "-o", out)
    assert run("snapshot", V42).stdout == out.read_text()


def test_snapshot_of_a_bad_profile_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(V42.read_text().replace("10.0.0.2]", "10.0.0.300]"))
    out = tmp_path / "s.json"
    result = run("snapshot", bad, "-o", out)
    assert result.exit_code == 1
    assert "10.0.0.300" in result.stderr and "Traceback" not in result.output
    assert not out.exists()


# --- diff: exit codes and sides ---------------------------------------------


def test_snapshot_against_its_own_profile_is_no_change(tmp_path):
    snap = tmp_path / "prod.json"
    run("snapshot", V42, "-o", snap)
    result = run("diff", snap, V42)
    assert result.exit_code == 0, result.output
    assert "no change" in result.stdout
    assert run("diff", V42, snap, "--fail-on", "breaking").exit_code == 0


def test_upgrade_exit_codes_follow_terraform_detailed_exitcode(tmp_path):
    assert run("diff", V42, V42, "--new-version", "4.3").exit_code == 2
    gate = run("diff", V42, V42, "--new-version", "4.3", "--fail-on", "breaking")
    assert gate.exit_code == 3
    # Going back re-opens the flows: changes, but nothing breaking.
    back = run("diff", V410, V42, "--fail-on", "breaking")
    assert back.exit_code == 2


def test_json_output_of_an_upgrade(tmp_path):
    snap = tmp_path / "prod.json"
    run("snapshot", V42, "-o", snap)
    result = run("diff", snap, V42, "--new-version", "4.3", "--format", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["old"]["kind"] == "snapshot" and data["new"]["kind"] == "profile"
    assert data["new"]["server_version"] == "4.3"
    assert data["breaking"] is True
    expected = compare(
        example_matrix("aws-private-vpn"),
        side_from_profile(str(V42), "4.3").matrix,
    )
    assert [c["kind"] for c in data["changes"]] == [c.kind for c in expected.changes]
    assert data["counts"]["removed"] == len(expected.changes) > 0
    # Every emitted file names the release in its header: all of them change.
    assert set(data["files"]["changed"]) == set(json.loads(snap.read_text())["files"])
    assert data["files"]["diffs"] == {}


def test_3_to_4_shows_the_vms_re_run_port_change():
    result = run("diff", V3, V42, "--format", "json")
    data = json.loads(result.stdout)
    # The only traffic change: the VMs' re-run range of the 3.x page becomes 54782.
    assert data["traffic_changed"] is True and data["breaking"] is True
    assert [
        (c["role"], c["kind"], [p["ports"] for p in c["traffic"]], c["flows"])
        for c in data["changes"]
    ] == [
        ("external_vms", "removed", [[64535, 65535]], ["vm-rerun-ssh"]),
        ("external_vms", "added", [[54782, 54782]], ["vm-rerun-ssh"]),
    ]
    assert data["upgrade_advice"] == []
    assert any(
        "load balancer" in r["old"]["purpose"] and r["old"]["role"] == "load_balancer"
        for r in data["reworded"]
    )
    assert result.exit_code == 2
    text = run("diff", V3, V42).stdout
    assert "Traffic: 2 changes, 1 breaking (1 removed, 0 narrowed, 1 added" in text
    assert "  removed  tcp/64535-65535 from ssh_rerun" in text
    assert "  added    tcp/54782 from ssh_rerun" in text


@pytest.mark.skipif(not shutil.which("patch"), reason="needs patch(1)")
def test_unified_diffs_apply_with_patch(tmp_path):
    result = run("diff", V42, V410, "--files", "--format", "json")
    data = json.loads(result.stdout)
    if not data["files"]["changed"]:
        pytest.skip("no emitter installed yet")
    assert set(data["files"]["diffs"]) == set(data["files"]["changed"])
    old = generated(V42, tmp_path / "old")
    new = generated(V410, tmp_path / "new")
    assert set(old) == set(new)
    patch = "".join(data["files"]["diffs"].values())
    subprocess.run(
        ["patch", "-p1", "--quiet", "--batch"],
        input=patch,
        text=True,
        cwd=tmp_path / "old",
        check=True,
        timeout=30,
    )
    for rel, text in new.items():
        assert (tmp_path / "old" / rel).read_text() == text, rel


def test_target_that_cannot_express_the_matrix_is_named_not_fatal(monkeypatch):
    target = TARGETS["terraform-aws"]
    no_lb = target.roles - {"load_balancer"}
    monkeypatch.setitem(TARGETS, "terraform-aws", replace(target, roles=no_lb))
    result = run("diff", V42, V410, "--format", "json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert "terraform-aws" in data["files"]["not_compared"]
    assert not any(
        p.startswith("terraform-aws/")
        for key in ("added", "removed", "changed")
        for p in data["files"][key]
    )


# --- formats ----------------------------------------------------------------


def _semantic_report(old: str, new_version: str) -> Report:
    """The traffic part only, so the snapshot does not move with the emitters."""
    before = side_from_profile(str(ROOT / "profiles" / f"{old}.yaml"))
    after = side_from_profile(str(ROOT / "profiles" / f"{old}.yaml"), new_version)
    return Report(before, after, compare(before.matrix, after.matrix), FileDiff())


def test_markdown_of_the_4_3_upgrade(file_regression):
    text = render_markdown(_semantic_report("aws-private-vpn", "4.3"))
    file_regression.check(text, extension=".md")


def test_markdown_tables_parse_with_one_cell_per_column():
    report = _semantic_report("aws-private-vpn", "4.3")
    tokens = MarkdownIt("commonmark").enable("table").parse(render_markdown(report))
    rows, cells = 0, []
    for token in tokens:
        if token.type == "tr_open":
            rows += 1
            cells.append(0)
        elif token.type in ("td_open", "th_open"):
            cells[-1] += 1
    tables = sum(1 for t in tokens if t.type == "table_open")
    # One header row per table, one row per change, four cells in each.
    assert rows == tables + len(report.traffic.changes)
    assert set(cells) == {4}
    inline = " ".join(t.content for t in tokens if t.type == "inline")
    for change in report.traffic.changes:
        assert all(p in inline for p in change.purposes)


def test_text_groups_by_role_and_marks_breaking():
    result = run("diff", V42, V42, "--new-version", "4.3")
    lines = result.stdout.splitlines()
    breaking = [line for line in lines if "  [breaking" in line]
    assert len(breaking) == len(
        _semantic_report("aws-private-vpn", "4.3").traffic.changes
    )
    headings = [line for line in lines if line.endswith((" - ingress", " - egress"))]
    assert headings == sorted(set(headings), key=headings.index)  # each group once


# --- bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ('{"format": 7, "matrix": {}}', "format 7 is not supported"),
        ("[1, 2]", "not a rulegen snapshot"),
        ("[" * 100_000 + "]" * 100_000, "nested too deep to be a snapshot"),
        ('{"format": 1, "matrix": ' + "[" * 5000 + "]" * 5000 + "}", "nested too"),
    ],
)
def test_bad_snapshot_files(tmp_path, content, message):
    bad = tmp_path / "old.json"
    bad.write_text(content)
    result = run("diff", bad, V42)
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


def test_snapshot_with_a_bad_rule_names_it(tmp_path):
    snap = tmp_path / "s.json"
    run("snapshot", V42, "-o", snap)
    data = json.loads(snap.read_text())
    data["matrix"]["rules"][0]["role"] = "database"
    data["matrix"]["rules"][1]["peer"] = {"cidrs": ["10.0.0.1/8"], "name": "x"}
    snap.write_text(json.dumps(data))
    result = run("diff", snap, V42)
    assert result.exit_code == 1
    assert "matrix.rules.0.role" in result.stderr
    data["matrix"]["rules"][0]["role"] = "load_balancer"
    snap.write_text(json.dumps(data))
    result = run("diff", snap, V42)
    assert result.exit_code == 1 and "'10.0.0.1/8' is not a CIDR" in result.stderr


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(protocol="tcp", ports=None), "matrix.rules.0.ports"),
        (lambda r: r.update(protocol="all", ports=[1, 2]), "matrix.rules.0.ports"),
        (lambda r: r.update(purpose="x" * 1_000_000), None),
    ],
)
def test_snapshot_rules_must_say_what_they_allow(tmp_path, edit, message):
    snap = tmp_path / "s.json"
    run("snapshot", V42, "-o", snap)
    data = json.loads(snap.read_text())
    edit(data["matrix"]["rules"][0])
    snap.write_text(json.dumps(data))
    result = run("diff", snap, V42)
    assert "Traceback" not in result.output
    if message:
        assert result.exit_code == 1 and message in result.stderr
    else:  # a long but valid text is no problem
        assert result.exit_code in (0, 2)


def test_snapshot_of_an_unknown_version_is_refused(tmp_path):
    snap = tmp_path / "s.json"
    run("snapshot", V42, "-o", snap)
    data = json.loads(snap.read_text())
    data["matrix"]["server_version"] = "99"
    data["matrix"]["profile"] = "p" * 1_000_000
    data["matrix"]["release_line"] = "r" * 1_000_000
    snap.write_text(json.dumps(data))
    result = run("diff", snap, V42)
    assert result.exit_code == 1 and "matrix.server_version: '99' is not one of" in (
        result.stderr
    )
    assert max(len(line) for line in result.stderr.splitlines()) < 400


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.yaml", V42], "cannot read"),
        ([V42, V42, "--new-version", "9.9"], "'9.9' is not known"),
    ],
)
def test_bad_arguments(args, message):
    result = run("diff", *args)
    assert result.exit_code == 1 and message in result.stderr
    assert "Traceback" not in result.output


def test_version_override_on_a_snapshot_is_refused(tmp_path):
    snap = tmp_path / "s.json"
    run("snapshot", V42, "-o", snap)
    result = run("diff", snap, V42, "--old-version", "4.3")
    assert result.exit_code == 1
    assert "is a snapshot" in result.stderr and "--old-version" in result.stderr


def test_switching_to_a_stateless_engine_is_said(tmp_path):
    stateless = tmp_path / "stateless.yaml"
    stateless.write_text(V42.read_text().replace("stateful: true", "stateful: false"))
    result = run("diff", V42, stateless, "--format", "json")
    data = json.loads(result.stdout)
    assert (data["old"]["stateful"], data["new"]["stateful"]) == (True, False)
    # Return rules only add traffic: nothing is cut off.
    assert data["changes"] and not data["breaking"]
    assert all(c["traffic"][0].get("source_ports") for c in data["changes"])
    assert "Rule engine: stateful -> stateless" in run("diff", V42, stateless).stdout


def test_a_profile_from_standard_input_can_be_diffed():
    result = CliRunner().invoke(main, ["diff", "-", str(V42)], input=V42.read_text())
    assert result.exit_code == 0, result.output
