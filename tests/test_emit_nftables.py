"""nftables emitter: snapshots, `nft -c`, and real loads into throwaway namespaces."""

from __future__ import annotations

import shutil

import pytest

from conftest import EXAMPLES, ROOT, needs_root, profile_from
from generator.emitters import TARGETS, emit, targets_for
from generator.emitters import nftables as nft
from generator.optimizer import optimize
from generator.planner import plan
from test_emit_iptables import (
    STATELESS,
    in_ns,
    load_case,
    netns,
    workload,
)  # noqa: F401

CASES = EXAMPLES + ["stateless"]
TARGET = TARGETS["nftables"]
MISSING = [t for t in ("ip", "nft") if not shutil.which(t)]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"missing {', '.join(MISSING)} (apt-get install nftables)"
)


def generate(name: str):
    prof, matrix = load_case(name)
    files = emit(matrix, prof, [TARGET])
    return prof, matrix, {k.split("/", 1)[1]: v for k, v in files.items()}


@pytest.fixture(params=CASES)
def case(request) -> str:
    return request.param


def test_snapshots(case, file_regression):
    _, _, files = generate(case)
    for rel, text in sorted(files.items()):
        stem, ext = rel.rsplit(".", 1)
        file_regression.check(text, basename=f"{case}-{stem}", extension=f".{ext}")


def test_output_is_deterministic(case):
    assert generate(case)[2] == generate(case)[2]


def test_target_is_registered_for_generic_and_on_request():
    assert TARGET in targets_for("generic")
    assert TARGET not in targets_for("aws")
    assert targets_for("aws", ("nftables",)) == [TARGET]
    assert targets_for("gcp", ("nftables",)) == [TARGET]


def test_one_table_of_its_own_replaced_in_one_transaction(case):
    _, matrix, files = generate(case)
    for role in matrix.roles():
        text = files[f"{role}.nft"]
        assert "flush ruleset" not in text
        lines = [l for l in text.splitlines() if l and not l.startswith("#")]
        assert lines[:3] == [
            "table inet rulegen {}",
            "delete table inet rulegen",
            "table inet rulegen {",
        ]
        for hook in ("input", "output", "forward"):
            assert (
                f"type filter hook {hook} priority filter - 10; policy accept;" in text
            )
        # every rule carries its flows; every chain ends in a drop
        assert 'comment "rulegen: ' in text
        for family in ("v4", "v6"):
            chain = text.split(f"chain input_{family} {{")[1].split("\n\t}")[0]
            assert chain.strip().endswith("drop")


def test_big_address_lists_become_interval_sets():
    _, _, files = generate("stateless")
    text = files["nomad_clients.nft"]
    assert "set vcs_v4 {" in text and "flags interval" in text and "auto-merge" in text
    assert (
        "ip saddr @vcs_v4 tcp sport 22 tcp dport 32768-60999"
        " tcp flags & (fin | syn | rst | ack) != syn accept" in text
    )
    assert "set vcs_v6" not in text  # one IPv6 network: no set needed
    assert "ip6 saddr 2a0a:a440::/29" in text


# --- real loads ---------------------------------------------------------------


@needs_root
@needs_tools
def test_checks_loads_twice_next_to_a_foreign_table_and_removes(case, netns, tmp_path):
    prof, matrix, files = generate(case)
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    in_ns(netns, "nft", "add", "table", "ip", "foreign")
    in_ns(netns, "nft", "add", "chain", "ip", "foreign", "keep")
    foreign = in_ns(netns, "nft", "list", "table", "ip", "foreign").stdout
    for role in matrix.roles():
        checked = in_ns(
            netns, "nft", "-c", "-f", f"{role}.nft", cwd=tmp_path, check=False
        )
        assert checked.returncode == 0, checked.stderr
        for attempt in (1, 2):
            result = in_ns(
                netns, "sh", "apply.sh", "--yes", role, cwd=tmp_path, check=False
            )
            assert result.returncode == 0, f"{role} load {attempt}: {result.stderr}"
        tables = in_ns(netns, "nft", "list", "tables").stdout.split("\n")
        assert tables.count("table inet rulegen") == 1
        loaded = in_ns(netns, "nft", "list", "table", "inet", "rulegen").stdout
        expected = files[f"{role}.nft"].count(" accept") + files[f"{role}.nft"].count(
            "\t\tdrop"
        )
        assert loaded.count(" accept") + loaded.count("\t\tdrop") >= expected - 6
        assert in_ns(netns, "nft", "list", "table", "ip", "foreign").stdout == foreign
        in_ns(netns, "sh", "apply.sh", "--remove", role, cwd=tmp_path)
        assert "rulegen" not in in_ns(netns, "nft", "list", "tables").stdout
        assert in_ns(netns, "nft", "list", "table", "ip", "foreign").stdout == foreign


@needs_root
@needs_tools
def test_a_10000_address_profile_loads(netns, tmp_path):
    import yaml

    data = workload().profile("generic", 10_000)
    prof = profile_from(yaml.safe_dump(data))
    matrix = optimize(plan(prof))[0]
    files = nft.emit(matrix, prof, TARGET)
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    result = in_ns(
        netns, "sh", "apply.sh", "--yes", "nomad_clients", cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = in_ns(
        netns, "nft", "list", "set", "inet", "rulegen", "ssh_rerun_v4"
    ).stdout
    added = files["nomad_clients.nft"].split("set ssh_rerun_v4 {")[1].split("}")[0]
    assert listed.count(",") + 1 >= added.count(",") - 50  # auto-merge may join a few
    assert added.count(",") > 9000


@pytest.mark.parametrize("target", ["iptables", "nftables"])
def test_apply_scripts_pass_shellcheck(target, tmp_path):
    import subprocess

    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    prof, matrix = load_case("stateless")
    files = emit(matrix, prof, [TARGETS[target]])
    path = tmp_path / "apply.sh"
    path.write_text(files[f"{target}/apply.sh"])
    result = subprocess.run(
        [shellcheck, "-s", "sh", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
