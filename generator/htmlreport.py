"""`rulegen report`: one self-contained HTML page to review an install's firewall.

The diagram (laid out by Graphviz), the matrix per role and direction, warnings and
notes, the profile's key facts and, against an older profile or snapshot, what
traffic changes. Nothing in the page refers to anything outside it.
"""

from __future__ import annotations

from dataclasses import field

from . import __version__
from .flowgraph import FlowGraph, build, line_text, rule_line, svg, to_dot
from .matrix import DIRECTIONS, ROLE_TITLES, Matrix, Rule, port_text
from .records import dataclass

INLINE_ADDRESSES = 8  # longer lists are linked to the address lists


@dataclass
class Row:
    rule: Rule
    edge: str
    anchor: str | None
    traffic: str
    peer: str
    cidrs: tuple[str, ...] = ()  # shown in full under the peer
    link: str | None = None  # to the peer's address list


@dataclass
class Table:
    role: str
    direction: str
    title: str
    rows: list[Row] = field(default_factory=list)


def _facts(profile, matrix: Matrix) -> list[tuple[str, str]]:
    addresses = {c for r in matrix.rules for c in r.peer.cidrs}
    facts = [
        ("Install", profile.name),
        (
            "CircleCI Server",
            f"{profile.server_version} (rules of the {matrix.release_line} page)",
        ),
        ("Cloud", profile.cloud),
        ("Access", "private (VPN)" if profile.access == "vpn" else "public"),
        (
            "Rule engine",
            (
                "stateful"
                if profile.stateful
                else "stateless: return rules to ports "
                f"{profile.ephemeral_ports[0]}-{profile.ephemeral_ports[1]}"
            ),
        ),
        (
            "Load balancer",
            (
                "transparent: its ingress applies to the Kubernetes nodes"
                if profile.transparent_lb
                else "its own firewall (circleci-proxy)"
            ),
        ),
        ("VMs with public IPs", "yes" if profile.assign_public_ip else "no"),
        (
            "Obsolete rows",
            "kept" if profile.include_obsolete else "left out (include_obsolete)",
        ),
    ]
    if (profile.aws or {}).get("existing_groups", {}).get(
        "kubernetes_nodes"
    ) == "eks_cluster":
        facts.append(
            (
                "Kubernetes nodes' security group",
                "the EKS cluster security group, passed in (aws.existing_groups): it"
                " keeps its allow-all egress, so the nodes' egress rules restrict"
                " nothing in AWS; give the node group a group of its own, or accept"
                " it knowingly",
            )
        )
    if profile.vpc_cidr:
        facts.append(("VPC", profile.vpc_cidr))
    for role, cidrs in profile.subnets.items():
        if cidrs:
            facts.append((f"Subnets: {ROLE_TITLES.get(role, role)}", ", ".join(cidrs)))
    if profile.dns_servers:
        facts.append(("DNS servers", ", ".join(profile.dns_servers)))
    if profile.nat_gateway_ips:
        facts.append(("NAT gateways", ", ".join(profile.nat_gateway_ips)))
    if profile.lb.get("kind"):
        from .paths import balancer

        facts.append(("Load balancer kind", balancer(profile).title))
    if profile.pod_cidrs:
        facts.append(("Pod ranges", ", ".join(profile.pod_cidrs)))
    if profile.egress_proxy:
        proxy = profile.egress_proxy
        facts.append(
            ("Egress proxy", f"{', '.join(proxy['addresses'])} port {proxy['port']}")
        )
    facts.append(
        ("Rules", f"{len(matrix.rules)} ({len(addresses):,} distinct address blocks)")
    )
    return facts


def _tables(matrix: Matrix, graph: FlowGraph, anchored: set[str]) -> list[Table]:
    tables = []
    for role in matrix.roles():
        for direction in DIRECTIONS:
            rules = matrix.for_role(role, direction)
            if not rules:
                continue
            table = Table(role, direction, f"{ROLE_TITLES[role]} - {direction}")
            for rule in rules:
                edge = graph.rule_edges[rule.name]
                anchor = None if edge in anchored else f"{edge}-rows"
                anchored.add(edge)
                table.rows.append(_row(rule, edge, anchor, graph))
            tables.append(table)
    return tables


def _row(rule: Rule, edge: str, anchor: str | None, graph: FlowGraph) -> Row:
    traffic = line_text(rule_line(rule))
    if rule.source_ports:
        traffic += f" (replies from port {port_text(rule.source_ports)})"
    peer = rule.peer
    if peer.role:
        return Row(rule, edge, anchor, traffic, ROLE_TITLES[peer.role])
    name = peer.name or "addresses"
    if len(peer.cidrs) <= INLINE_ADDRESSES:
        return Row(rule, edge, anchor, traffic, f"{name}: {', '.join(peer.cidrs)}")
    node = next(n for n in graph.peers() if n.title == name)
    text = f"{name}: {len(peer.cidrs):,} addresses"
    if set(node.cidrs) == set(peer.cidrs):
        return Row(rule, edge, anchor, traffic, text, link=f"addr-{node.id}")
    return Row(rule, edge, anchor, traffic, text, cidrs=peer.cidrs)


@dataclass
class ChangeRow:
    kind: str
    breaking: bool
    where: str
    role: str
    direction: str
    traffic: list[str]
    purposes: list[str]
    references: list[str]
    edges: list[str]
    anchors: list[str]
    expected: str = ""  # the new page's egress table that drops it, or ""


def _changes(report, graph: FlowGraph, anchored: set[str]) -> list[ChangeRow]:
    from .diff import piece_text

    rows = []
    for change, edges in zip(report.traffic.changes, graph.change_edges):
        anchors = [f"{e}-rows" for e in edges if e not in anchored]
        anchored.update(edges)
        rows.append(
            ChangeRow(
                kind=change.kind,
                breaking=change.breaking,
                where=f"{ROLE_TITLES[change.role]} - {change.direction}",
                role=change.role,
                direction=change.direction,
                traffic=[piece_text(p, change.direction) for p in change.traffic],
                purposes=change.purposes,
                references=change.references,
                edges=edges,
                anchors=anchors,
                expected=change.expected,
            )
        )
    # Breaking first; the diff's own order (role, direction, traffic) within each.
    return sorted(rows, key=lambda r: not r.breaking)


def _usage(graph: FlowGraph) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for edge in graph.edges:
        for end, other, word in (
            (edge.src, edge.dst, "to"),
            (edge.dst, edge.src, "from"),
        ):
            if graph.nodes[end].kind == "peer":
                text = f"{word} {graph.nodes[other].title}"
                if text not in out.setdefault(end, []):
                    out[end].append(text)
    return out


def render(profile, matrix: Matrix, report=None) -> str:
    """The page; `report` is a diff.Report whose new side is `matrix`'s profile.

    Raises flowgraph.DotError when Graphviz cannot lay out the diagram.
    """
    from .templating import render as render_template

    changes = report.traffic.changes if report else None
    title = f"{matrix.profile}: CircleCI Server {matrix.server_version}"
    if report:
        title = f"{report.old.title} -> {report.new.title}"
    cluster = f"{profile.name} ({profile.cloud}, {profile.access})"
    graph = build(matrix, changes, title=title, cluster=cluster)
    picture = svg(to_dot(graph, links=True))
    anchored: set[str] = set()
    change_rows = _changes(report, graph, anchored) if report else []
    tables = _tables(matrix, graph, anchored)
    summary = None
    if report:
        from .diff import KINDS, report_dict

        data = report_dict(report)
        summary = {
            "counts": [(k, data["counts"][k]) for k in KINDS],
            "total": len(report.traffic.changes),
            "breaking": len(report.traffic.breaking),
            "expected": len(report.traffic.expected),
            "reworded": len(report.traffic.reworded),
            "notes_added": report.traffic.notes_added,
            "notes_removed": report.traffic.notes_removed,
            "files": data["files"],
            "old": report.old.label,
            "new": report.new.label,
        }
    return render_template(
        "report/report.html.j2",
        title=title,
        version=__version__,
        profile=profile,
        matrix=matrix,
        facts=_facts(profile, matrix),
        graph=graph,
        svg=picture,
        tables=tables,
        peers=graph.peers(),
        usage=_usage(graph),
        diff=summary,
        changes=change_rows,
    )
