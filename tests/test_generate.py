"""`rulegen generate`: targets, --check, hand edits, capability errors."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from generator.cli import main
from generator.emitters import TARGETS, EmitError, Target, expressible, targets_for

from conftest import ROOT, example_matrix

GCP = ROOT / "profiles" / "gcp.yaml"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def generate(out, *extra):
    return run("generate", GCP, "--target", "gcp-firewall", "-o", out, *extra)


def snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generate_is_deterministic_and_idempotent(tmp_path):
    assert generate(tmp_path / "a").exit_code == 0
    assert generate(tmp_path / "b").exit_code == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    again = generate(tmp_path / "a")
    assert again.exit_code == 0 and "0 new, 0 changed" in again.stderr


def test_check_writes_nothing_and_lists_changes(tmp_path):
    out = tmp_path / "out"
    result = generate(out, "--check")
    assert result.exit_code == 2  # findings: files a run would write
    assert "would write" in result.stdout and "firewalls.json (new)" in result.stdout
    assert not out.exists()
    generate(out)
    assert generate(out, "--check").exit_code == 0


def test_hand_edit_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "out"
    generate(out)
    edited = out / "gcp-firewall" / "firewalls.json"
    edited.write_text("[]\n")
    result = generate(out)
    assert result.exit_code == 1 and "edited by hand" in result.stderr
    assert edited.read_text() == "[]\n"
    check = generate(out, "--check")
    assert check.exit_code == 2 and "(edited by hand)" in check.stdout
    assert generate(out, "--force").exit_code == 0
    assert edited.read_text() != "[]\n"


def test_unknown_or_foreign_target_is_a_clear_error(tmp_path):
    result = run("generate", GCP, "--target", "pf", "-o", tmp_path)
    assert (
        result.exit_code == 1 and "'pf' is not one of 'terraform-aws'" in result.stderr
    )
    aws = ROOT / "profiles" / "aws-private-vpn.yaml"
    result = run("generate", aws, "--target", "gcp-firewall", "-o", tmp_path)
    assert result.exit_code == 1 and "does not apply to cloud aws" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_cloud_has_default_targets():
    for cloud in ("aws", "gcp", "generic"):
        assert targets_for(cloud)


def test_capability_error_names_the_rule():
    matrix = example_matrix("aws-private-vpn")
    narrow = Target(
        "narrow", "none", clouds=("aws",), protocols=frozenset({"tcp", "all"})
    )
    with pytest.raises(
        EmitError, match=r"cannot express protocol udp: rule \w+ egress udp/53"
    ):
        expressible(narrow, matrix)
    no_lb = TARGETS["gcp-firewall"]
    with pytest.raises(
        EmitError, match="cannot attach rules to load_balancer: rule load_balancer"
    ):
        expressible(no_lb, matrix)


def test_stateful_targets_leave_return_rules_to_the_engine():
    from dataclasses import replace

    from generator.planner import plan
    from conftest import example

    matrix = plan(replace(example("aws-private-vpn"), stateful=False))
    returns = [r for r in matrix.rules if r.is_return]
    assert returns
    stateful = Target("sg", "none", clouds=("aws",))
    assert len(expressible(stateful, matrix)) == len(matrix.rules) - len(returns)
    stateless_without_ports = Target("acl", "none", clouds=("aws",), stateful=False)
    with pytest.raises(EmitError, match="cannot match source ports"):
        expressible(stateless_without_ports, matrix)


AWS = ROOT / "profiles" / "aws-private-vpn.yaml"


def test_a_target_run_touches_only_that_targets_files(tmp_path):
    out = tmp_path / "out"
    assert run("generate", AWS, "-o", out).exit_code == 0
    before = snapshot(out)
    result = run("generate", AWS, "--target", "iptables", "-o", out)
    assert result.exit_code == 0 and "0 removed" in result.stderr
    after = snapshot(out)
    assert {p: b for p, b in after.items() if p.parts[0] != "iptables"} == {
        p: b for p, b in before.items() if p.name != ".rulegen-manifest.json"
    } | {p: b for p, b in after.items() if p.name == ".rulegen-manifest.json"}
    result = run("generate", AWS, "--target", "cloudformation", "-o", out)
    assert result.exit_code == 0 and "0 removed" in result.stderr
    assert (out / "terraform-aws").is_dir() and (out / "iptables").is_dir()
    # A run without --target leaves the iptables files asked for on request.
    assert run("generate", AWS, "-o", out).exit_code == 0
    assert (out / "iptables").is_dir()


def test_check_says_what_would_be_written_changed_and_removed(tmp_path):
    import json

    out = tmp_path / "out"
    generate(out)
    check = generate(out, "--check")
    assert check.exit_code == 0
    assert check.stdout == f"{out}: all 2 files are up to date\n"
    # A file rulegen wrote that is no longer generated (as an older release's file
    # would be): a removal.
    from generator.writer import compare, write_tree

    stale = out / "gcp-firewall" / "old.sh"
    files = {
        str(p.relative_to(out)): p.read_text() for p in (out / "gcp-firewall").iterdir()
    }
    files["gcp-firewall/old.sh"] = "old\n"
    write_tree(out, files, compare(out, files), force=False)
    assert (
        "gcp-firewall/old.sh"
        in json.loads((out / ".rulegen-manifest.json").read_text())["files"]
    )
    (out / "gcp-firewall" / "firewalls.json").unlink()
    check = generate(out, "--check")
    assert check.exit_code == 2
    assert check.stdout.splitlines() == [
        f"would write {out}/gcp-firewall/firewalls.json (new)",
        f"would remove {out}/gcp-firewall/old.sh",
    ]
    result = generate(out)
    assert "1 new, 0 changed, 1 unchanged, 1 removed" in result.stderr
    assert not stale.exists()


def test_manifest_entry_outside_the_folder_is_reported_and_kept_away(tmp_path):
    import json

    from generator.writer import digest

    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    victim.write_text("v\n")
    generate(out)
    manifest = json.loads((out / ".rulegen-manifest.json").read_text())
    manifest["files"]["../victim.txt"] = digest("v\n")
    (out / ".rulegen-manifest.json").write_text(json.dumps(manifest))
    result = generate(out, "--force")
    assert result.exit_code == 0 and victim.exists()
    assert "'../victim.txt' is outside the folder; ignored" in result.stderr
    assert "0 new, 0 changed, 2 unchanged, 0 removed" in result.stderr


def test_write_errors_are_one_line_without_traceback(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gcp-firewall").write_text("a file where a folder goes\n")
    result = generate(out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {out}/gcp-firewall is a file where a folder should be\n"
    )
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = generate(blocker / "sub")
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {blocker}/sub")
    assert "Traceback" not in result.output


def test_a_manifest_that_is_a_folder_is_one_line(tmp_path):
    out = tmp_path / "out"
    (out / ".rulegen-manifest.json").mkdir(parents=True)
    result = generate(out)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {out}/.rulegen-manifest.json: not a regular file; rulegen keeps its"
        " manifest there, move it away\n"
    )


def test_a_read_only_filesystem_is_one_line(tmp_path, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    result = generate(out)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {out}/") and result.stderr.endswith(
        ": cannot write: Read-only file system\n"
    )
    assert len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == []


def test_two_runs_of_different_profiles_into_one_folder_take_turns(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    profiles = [AWS, ROOT / "profiles" / "aws-private-vpn-4.10.yaml"]
    for _ in range(3):  # bounded
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "generator", "generate", str(p), "-o", str(out)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for p in profiles
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        # The tree is the complete output of the run that went second.
        current = [run("generate", p, "-o", out, "--check").exit_code for p in profiles]
        assert sorted(current) == [0, 2]
        assert not [
            p for p in out.rglob(".rulegen-*") if p.name != ".rulegen-manifest.json"
        ]


@pytest.mark.parametrize("command", ["snapshot", "init"])
def test_other_writes_fail_in_one_line(tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [command, AWS] if command == "snapshot" else [command]
    result = run(*args, "-o", blocker / "sub.txt")
    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"error: {blocker}/sub.txt: cannot write: Not a directory\n"
    )


def test_kill_9_never_leaves_a_tree_the_next_run_refuses(tmp_path, monkeypatch):
    """A bounded loop of real SIGKILLs while files are replaced (see
    benchmarks/kill_generate.py for the long run)."""
    import subprocess
    import sys
    import time

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from workload import profile, write_profile

    a, b = profile("generic", 2000), profile("generic", 1500)
    b["name"] = a["name"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [write_profile(tmp_path / "a", a), write_profile(tmp_path / "b", b)]
    out = tmp_path / "out"
    assert run("generate", paths[0], "-o", out).exit_code == 0
    for i in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "generator", "generate", str(paths[(i + 1) % 2])]
            + ["-o", str(out)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / ".rulegen-journal.json").exists():
                time.sleep(0.002 * i)
                break
            time.sleep(0.0005)
        proc.kill()
        proc.wait()
        after = run("generate", paths[i % 2], "-o", out)
        assert after.exit_code == 0, after.stderr
        assert "edited by hand" not in after.stderr
        assert not [
            p for p in out.rglob(".rulegen-*") if p.name != ".rulegen-manifest.json"
        ]
