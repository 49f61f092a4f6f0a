"""audit against hostile exports: each gets the verdict it must (issue 23).

An export that allows more than the profile never reads "no difference": what the
reader evaluates is a finding, what it cannot evaluate is "not evaluated" (exit 4),
and what the platform itself would refuse is bad input (exit 1) with its line or
rule.
"""

from __future__ import annotations

import json
import shlex

import pytest

from conftest import ROOT, example, needs_root, profile_from
from generator.audit import _shown, render_text
from generator.readers.iptables import _tokens
from test_audit import (
    DATA,
    TARGETS,
    _as_saved,
    aws_export,
    files_for,
    in_ns,
    iptables_audit,
    iptables_files,
    lines,
    namespace,
    needs_iptables,
    nft_audit,
    run,
    shipped_matrix,
)

ROLE = "nomad_clients"
METAL = ROOT / "profiles" / "generic-baremetal.yaml"  # ssh_admin: 192.168.1.64/28


def clean_save() -> str:
    """The nomad clients' iptables output of generic-baremetal, as iptables-save
    prints it: audits clean."""
    return _as_saved(iptables_files(example("generic-baremetal"))[f"{ROLE}.iptables"])


def saved_with(rules: str, chains: str = "") -> str:
    """The clean export with `rules` first in INPUT (and `chains` declared)."""
    text = clean_save().replace(
        ":OUTPUT ACCEPT [0:0]\n", ":OUTPUT ACCEPT [0:0]\n" + chains
    )
    return text.replace("-A INPUT -j RULEGEN-IN\n", rules + "-A INPUT -j RULEGEN-IN\n")


def as_restore(saved: str) -> str:
    """An export as iptables-restore takes it: a table's chains declared first."""
    out, rules = [], []
    for line in saved.splitlines():
        if line.startswith("-A "):
            rules.append(line)
        elif line == "COMMIT":
            out += rules + [line]
            rules = []
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def host_audit(text: str, **kwargs):
    return iptables_audit(example("generic-baremetal"), ROLE, text, **kwargs)


def icmp_lines(result) -> list[str]:
    return [
        _shown(p, c.direction)
        for c in result.excess
        for p in c.traffic
        if p.protocol.startswith("icmp")
    ]


def test_the_clean_export_is_clean():
    result = host_audit(clean_save())
    assert not result.different and result.exit_code() == 0


# --- iptables ---------------------------------------------------------------------


def deep_chains(depth: int) -> tuple[str, str]:
    chains = "".join(f":D{i} - [0:0]\n" for i in range(depth))
    rules = "-A INPUT -j D0\n" + "".join(
        f"-A D{i} -j D{i + 1}\n" for i in range(depth - 1)
    )
    return rules + f"-A D{depth - 1} -p tcp -m tcp --dport 9999 -j ACCEPT\n", chains


def test_an_accept_at_the_end_of_a_chain_nested_70_deep_is_excess():
    rules, chains = deep_chains(70)
    result = host_audit(saved_with(rules, chains))
    assert result.exit_code() == 2
    assert lines(result.excess) == ["tcp/9999 from 0.0.0.0/0 except 127.0.0.0/8"]
    assert result.excess[0].purposes == ["-A D69 -p tcp -m tcp --dport 9999 -j ACCEPT"]


@needs_root
@needs_iptables
def test_iptables_legacy_loads_the_70_deep_chain_and_its_save_reads_the_same():
    import shutil

    if not shutil.which("iptables-legacy-restore"):
        pytest.skip("needs iptables-legacy-restore")
    rules, chains = deep_chains(70)
    with namespace() as ns:
        in_ns(
            ns, "iptables-legacy-restore", input=as_restore(saved_with(rules, chains))
        )
        saved = in_ns(ns, "iptables-legacy-save")
    assert saved.count("\n-A D") == 70
    assert lines(host_audit(saved).excess) == lines(
        host_audit(saved_with(rules, chains)).excess
    )


def test_chains_nested_thousands_deep_are_evaluated():
    rules, chains = deep_chains(3000)
    assert host_audit(saved_with(rules, chains)).excess


@pytest.mark.parametrize(
    "rule",
    [
        "-A INPUT -m conntrack --ctstate INVALID,UNTRACKED -j ACCEPT\n",
        "-A INPUT -m state --state INVALID -j ACCEPT\n",
        "-A INPUT -m conntrack ! --ctstate NEW,ESTABLISHED,RELATED -j ACCEPT\n",
    ],
)
def test_accepting_invalid_or_untracked_packets_is_excess(rule):
    result = host_audit(saved_with(rule))
    assert result.exit_code() == 2 and not result.missing
    assert "tcp/all from 0.0.0.0/0 except" in " ".join(lines(result.excess))
    assert all(
        p.endswith("(a packet of no connection: INVALID or UNTRACKED)")
        for c in result.excess
        for p in c.purposes
    )


def test_dropping_invalid_packets_through_a_chain_of_its_own_blocks_nothing_needed():
    """ufw's layout: INVALID packets jump to a chain that logs and drops them."""
    rules = "-A INPUT -m conntrack --ctstate INVALID -j LOGDROP\n"
    chains = ":LOGDROP - [0:0]\n"
    text = saved_with(rules, chains).replace(
        "COMMIT",
        '-A LOGDROP -j LOG --log-prefix "invalid "\n-A LOGDROP -j DROP\nCOMMIT',
    )
    assert host_audit(text).exit_code() == 0


def test_an_accept_of_dnat_state_on_input_is_not_evaluated():
    result = host_audit(saved_with("-A INPUT -m conntrack --ctstate DNAT -j ACCEPT\n"))
    assert [f.why for f in result.live.unknown] == [
        "state DNAT: which connections the nat table redirects to this host is not"
        " evaluated; assumed not to match"
    ]
    assert result.exit_code() == 4


def test_icmp_from_anywhere_is_excess_by_type_where_echo_is_only_for_the_admins():
    result = host_audit(saved_with("-A INPUT -p icmp -j ACCEPT\n"))
    assert result.exit_code() == 2
    shown = icmp_lines(result)
    assert "icmp echo-request from 0.0.0.0/0 except 192.168.1.64/28" in shown
    assert "icmp types 9-10 from 0.0.0.0/0" in shown  # router advertisements
    # The errors are the host essentials from anywhere: never excess.
    assert not any(
        "destination-unreachable" in s or "time-exceeded" in s for s in shown
    )
    # Echo from the admins alone, by name or by number, is what the profile allows.
    for kind in ("echo-request", "8", "8/0"):
        rule = f"-A INPUT -s 192.168.1.64/28 -p icmp -m icmp --icmp-type {kind} -j ACCEPT\n"
        assert host_audit(saved_with(rule)).exit_code() == 0, kind
    # A drop of one code of echo does not block the admins' echo.
    drop = "-A INPUT -p icmp -m icmp --icmp-type 8/0 -j DROP\n"
    assert host_audit(saved_with(drop)).exit_code() == 0


@pytest.mark.parametrize(
    "rule, message",
    [
        (
            "-A INPUT -s 10.0.0.1/99 -j ACCEPT\n",
            "iptables.save:5: -s '10.0.0.1/99': /99 is not a prefix length or netmask"
            " of IPv4 (0-32)",
        ),
        (
            "-A INPUT -s ::/0 -j ACCEPT\n",
            "iptables.save:5: -s '::/0': an IPv6 address in an iptables-save file,"
            " which iptables-save never writes",
        ),
        (
            "-A INPUT -m iprange --src-range 10.0.0.1-2001:db8::1 -j ACCEPT\n",
            "iptables.save:5: --src-range '10.0.0.1-2001:db8::1': an IPv6 address",
        ),
        (
            "-A INPUT -d nowhere -j ACCEPT\n",
            "-d 'nowhere': 'nowhere' is not an address",
        ),
    ],
)
def test_malformed_iptables_addresses_are_bad_input_with_their_line(
    tmp_path, rule, message
):
    save = tmp_path / "iptables.save"
    save.write_text(saved_with(rule))
    result = run("audit", METAL, "--iptables-save", save, "--role", ROLE)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message.replace("iptables.save", str(save)) in result.output, result.output


def test_an_ipv4_address_in_an_ip6tables_file_is_bad_input(tmp_path):
    v6 = "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 10.0.0.0/8 -j ACCEPT\nCOMMIT\n"
    with pytest.raises(Exception) as caught:
        host_audit(clean_save(), v6=v6)
    assert "ip6tables.save:3: -s '10.0.0.0/8': an IPv4 address" in str(caught.value)


def test_an_ipset_address_of_the_other_family_is_bad_input():
    sets = "create admins hash:net family inet\nadd admins 2001:db8::/32\n"
    with pytest.raises(Exception) as caught:
        host_audit(clean_save(), ipset=sets)
    assert "ipset.save:2: '2001:db8::/32' is not of the family of set admins" in str(
        caught.value
    )


def test_a_5_mb_comment_is_read_whole():
    comment = "x" * 5_000_000
    rule = (
        f'-A INPUT -p tcp -m tcp --dport 7 -m comment --comment "{comment}" -j ACCEPT\n'
    )
    result = host_audit(saved_with(rule))
    assert lines(result.excess) == ["tcp/7 from 0.0.0.0/0 except 127.0.0.0/8"]
    assert comment in result.excess[0].purposes[0]


@pytest.mark.parametrize(
    "line",
    [
        '-A X -m comment --comment "a b" -j ACCEPT',
        '-A X --comment "q\\"x\\\\y\\z" -j A',
        "-A X --comment 'single quoted' a\\ b",
        '-A X --comment ""',
        '-A X a"b c"d',
        "-A X --comment \"x'y\" '\"'",
        '-A X "unclosed',
        "-A X 'unclosed",
        "-A X trailing\\",
    ],
)
def test_words_are_split_as_shlex_splits_them(line):
    def split(function):
        try:
            return function(line)
        except ValueError as exc:
            return f"error: {exc}"

    assert split(_tokens) == split(shlex.split)


def test_a_host_rule_the_reader_cannot_tell_is_not_evaluated_never_clean():
    rule = "-A INPUT -p tcp -m owner --uid-owner 0 -j ACCEPT\n"
    result = host_audit(saved_with(rule))
    assert not result.traffic.changes  # it may allow everything: the reader cannot tell
    assert result.exit_code() == 4
    assert "0 missing, 0 excess, 1 not evaluated" in render_text(result)


def test_exit_codes_and_their_precedence():
    unknown = "-A INPUT -p tcp -m owner --uid-owner 0 -j ACCEPT\n"
    excess = "-A INPUT -p tcp -m tcp --dport 7 -j ACCEPT\n"
    both = host_audit(saved_with(unknown + excess))
    assert both.exit_code() == 4  # not evaluated outranks findings...
    assert both.exit_code("excess") == 3  # ...but not a finding --fail-on names
    assert both.exit_code("any") == 3
    assert both.exit_code("missing") == 4  # nothing missing: still not evaluated
    only = host_audit(saved_with(excess))
    assert (only.exit_code(), only.exit_code("missing"), only.exit_code("any")) == (
        2,
        2,
        3,
    )


# --- nftables ---------------------------------------------------------------------


def nft_base() -> dict:
    return json.loads((DATA / "k8s-nodes.nft.json").read_text())


def nft_with(expr: list, at: int = 8, **extra) -> str:
    """The hand-written ruleset (audits clean) with one more input rule."""
    data = nft_base()
    rule = {"family": "inet", "table": "rulegen", "chain": "input", "handle": 99}
    data["nftables"].insert(at, {"rule": dict(rule, expr=expr, **extra)})
    return json.dumps(data)


def nft_file(tmp_path, text: str):
    path = tmp_path / "ruleset.json"
    path.write_text(text)
    return path


def nft_run(path):
    return run("audit", METAL, "--nft", path, "--role", "kubernetes_nodes")


def match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def test_nft_accepting_invalid_or_untracked_is_excess():
    ct = match({"ct": {"key": "state"}}, ["invalid", "untracked"], op="in")
    result = nft_audit(nft_with([ct, {"accept": None}]))
    assert result.exit_code() == 2 and not result.missing
    assert all(
        "ct state invalid,untracked accept (a packet of no connection" in p
        for c in result.excess
        for p in c.purposes
    )


def test_nft_icmp_from_anywhere_is_excess_by_type():
    icmp = match({"meta": {"key": "l4proto"}}, "icmp")
    result = nft_audit(nft_with([icmp, {"accept": None}], at=12))
    shown = icmp_lines(result)
    # Pods and the nodes' own subnet reach the nodes by every protocol: not excess.
    assert (
        "icmp echo-request from 0.0.0.0/0 except 10.244.0.0/16, 192.168.1.64/28,"
        " 192.168.10.0/24" in shown
    )


def test_nft_chains_deeper_than_the_kernel_jumps_are_evaluated_and_loops_refused(
    tmp_path,
):
    data = nft_base()
    chain = {"family": "inet", "table": "rulegen"}
    for i in range(20):
        data["nftables"].append({"chain": dict(chain, name=f"d{i}")})
        target = {"jump": {"target": f"d{i + 1}"}} if i < 19 else {"accept": None}
        data["nftables"].append({"rule": dict(chain, chain=f"d{i}", expr=[target])})
    first = {"rule": dict(chain, chain="input", expr=[{"jump": {"target": "d0"}}])}
    data["nftables"].insert(8, first)
    assert nft_audit(json.dumps(data)).exit_code() == 2
    data["nftables"][-1]["rule"]["expr"] = [{"jump": {"target": "d0"}}]
    result = nft_run(nft_file(tmp_path, json.dumps(data)))
    assert (
        result.exit_code == 1
        and "chains jump in a loop: inet rulegen d0 ->" in result.output
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d["nftables"][4]["chain"].update(prio=10**400),
            "nftables[4] chain inet rulegen input: priority of 401 digits is beyond a"
            " 32-bit integer",
        ),
        (
            lambda d: d["nftables"][4]["chain"].update(prio=1.5),
            "nftables[4] chain inet rulegen input: priority 1.5 is not an integer",
        ),
        (
            lambda d: d["nftables"][4]["chain"].update(policy="continue"),
            "nftables[4] chain inet rulegen input: policy 'continue'",
        ),
        (
            lambda d: d["nftables"][2]["set"]["elem"].append("2001:db8::1"),
            "nftables[2] set inet rulegen admins: '2001:db8::1' is an IPv6 address in an"
            " IPv4 match",
        ),
    ],
)
def test_malformed_nft_values_are_bad_input_with_their_chain_or_set(
    tmp_path, change, message
):
    data = nft_base()
    change(data)
    result = nft_run(nft_file(tmp_path, json.dumps(data)))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output, result.output


@pytest.mark.parametrize(
    "right, message",
    [
        (
            {"prefix": {"addr": "10.0.0.1", "len": 99}},
            "'10.0.0.1/99': /99 is not a prefix",
        ),
        ({"prefix": {"addr": "::", "len": 0}}, "'::/0' is an IPv6 address in an IPv4"),
        ({"set": ["10.0.0.1", "not-an-address"]}, "'not-an-address' is not an address"),
    ],
)
def test_malformed_nft_addresses_are_bad_input_with_their_rule(
    tmp_path, right, message
):
    saddr = match({"payload": {"protocol": "ip", "field": "saddr"}}, right)
    result = nft_run(nft_file(tmp_path, nft_with([saddr, {"accept": None}])))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "rule inet rulegen chain input handle 99: " + message in result.output


def test_an_nft_rule_the_reader_cannot_tell_is_not_evaluated_never_clean():
    skuid = match({"meta": {"key": "skuid"}}, 0)
    result = nft_audit(nft_with([skuid, {"accept": None}]))
    assert not result.traffic.changes and result.exit_code() == 4


def test_an_nft_comment_of_5_mb_is_read():
    text = nft_with(
        [
            match({"payload": {"protocol": "tcp", "field": "dport"}}, 7),
            {"accept": None},
        ],
        comment="x" * 5_000_000,
    )
    result = nft_audit(text)
    assert [line.split(" from ")[0] for line in lines(result.excess)] == [
        "tcp/7",
        "tcp/7",
    ]


# --- GCP --------------------------------------------------------------------------

GCP = ROOT / "profiles" / "gcp.yaml"  # roles by network tags


def gcp_rules() -> list[dict]:
    prof = example("gcp")
    files = files_for(prof, shipped_matrix(prof), [TARGETS["gcp-firewall"]])
    return json.loads(files["gcp-firewall/firewalls.json"])


def gcp_run(tmp_path, rules, profile=GCP):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    return run("audit", profile, "--gcp", path, "--format", "json")


ALLOW_ALL_ON_AN_ACCOUNT = {
    "name": "allow-all-other",
    "network": "global/networks/circleci",
    "priority": 100,
    "allowed": [{"IPProtocol": "all"}],
    "sourceRanges": ["0.0.0.0/0"],
    "targetServiceAccounts": ["other@acme-ci.iam.gserviceaccount.com"],
}


def test_gcp_allow_all_on_an_account_no_role_maps_to_is_not_evaluated(tmp_path):
    result = gcp_run(tmp_path, gcp_rules() + [ALLOW_ALL_ON_AN_ACCOUNT])
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert not report["missing"] and not report["excess"]
    found = report["not_evaluated"]
    assert {f["role"] for f in found} == {
        "kubernetes_nodes",
        "nomad_clients",
        "external_vms",
    }
    assert all("allow-all-other" in f["where"] for f in found)
    assert all(
        "targets service account other@acme-ci.iam.gserviceaccount.com, which no role"
        in f["why"]
        for f in found
    )


def test_gcp_rule_on_another_account_is_evaluated_where_roles_run_as_accounts(tmp_path):
    """An instance runs as one service account: where every role is addressed by
    its own, a rule on another account applies to none of them."""
    text = GCP.read_text().replace(
        "  tags:\n    kubernetes_nodes: acme-gke-node\n    nomad_clients: acme-nomad\n"
        "    external_vms: acme-vm\n",
        "  service_accounts:\n"
        "    kubernetes_nodes: gke@acme-ci.iam.gserviceaccount.com\n"
        "    nomad_clients: nomad@acme-ci.iam.gserviceaccount.com\n"
        "    external_vms: vm@acme-ci.iam.gserviceaccount.com\n",
    )
    assert "service_accounts" in text
    profile = tmp_path / "gcp-accounts.yaml"
    profile.write_text(text)
    prof = profile_from(text)
    files = files_for(prof, shipped_matrix(prof), [TARGETS["gcp-firewall"]])
    rules = json.loads(files["gcp-firewall/firewalls.json"])
    assert gcp_run(tmp_path, rules, profile).exit_code == 0
    result = gcp_run(tmp_path, rules + [ALLOW_ALL_ON_AN_ACCOUNT], profile)
    assert result.exit_code == 0, result.output
    # A tag, though, any instance may carry.
    tagged = dict(ALLOW_ALL_ON_AN_ACCOUNT, targetTags=["legacy"])
    del tagged["targetServiceAccounts"]
    assert gcp_run(tmp_path, rules + [tagged], profile).exit_code == 4


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"disabled": "false"},
            '.disabled: "false" is not true or false (a string is not a boolean',
        ),
        ({"disabled": 0}, ".disabled: 0 is not true or false"),
        ({"priority": True}, ".priority: True is not 0..65535"),
        ({"priority": 1e400}, ".priority: inf is not 0..65535"),
    ],
)
def test_gcp_values_gcp_never_exports_are_bad_input_with_the_rule(
    tmp_path, change, message
):
    rules = gcp_rules()
    rules[0].update(change)
    result = gcp_run(tmp_path, rules)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"[0] {rules[0]['name']}{message}" in result.output, result.output


# --- AWS --------------------------------------------------------------------------

AWS = ROOT / "profiles" / "aws-private-vpn.yaml"


def aws_run(tmp_path, export):
    path = tmp_path / "groups.json"
    path.write_text(json.dumps(export))
    return run("audit", AWS, "--aws", path, "--format", "json")


def test_an_aws_permission_the_reader_cannot_tell_is_not_evaluated_never_clean(
    tmp_path,
):
    export = aws_export(example("aws-private-vpn"))
    export["SecurityGroups"][0]["IpPermissions"].append(
        {
            "IpProtocol": "-1",
            "PrefixListIds": [{"PrefixListId": "pl-0123456789abcdef0"}],
        }
    )
    result = aws_run(tmp_path, export)
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert not report["missing"] and not report["excess"]
    assert ["prefix list" in f["why"] for f in report["not_evaluated"]] == [True]


def test_aws_icmp_is_compared_by_its_type(tmp_path):
    export = aws_export(example("aws-private-vpn"))
    export["SecurityGroups"][0]["IpPermissions"].append(
        {
            "IpProtocol": "icmp",
            "FromPort": 8,
            "ToPort": -1,
            "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
        }
    )
    report = json.loads(aws_run(tmp_path, export).stdout)
    icmp = [
        p for c in report["excess"] for p in c["traffic"] if p["protocol"] == "icmp"
    ]
    # Echo alone (FromPort is the type), from everywhere but loopback.
    assert [p["icmp_types"] for p in icmp] == [[8, 8]]
    assert icmp[0]["peer"]["cidrs"][0] == "0.0.0.0/2"
    assert "128.0.0.0/1" in icmp[0]["peer"]["cidrs"]


def test_an_aws_port_that_is_a_boolean_is_bad_input(tmp_path):
    export = aws_export(example("aws-private-vpn"))
    perm = next(
        p
        for g in export["SecurityGroups"]
        for p in g["IpPermissions"]
        if p["IpProtocol"] == "tcp"
    )
    perm["FromPort"] = True
    result = aws_run(tmp_path, export)
    assert result.exit_code == 1 and "FromPort/ToPort True-" in result.output
