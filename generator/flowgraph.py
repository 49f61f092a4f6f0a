"""The matrix as a graph of roles and peers, for `plan --format dot` and the HTML report.

One node per role and per named peer list; one edge per (source, destination) pair,
labelled with protocols and ports. Addresses are summarised on the edges (the tables
list them in full). A stateless profile's return rules are drawn on the edge of the
flow they answer ("+ replies"). With a diff, changed traffic gets edges of its own,
one per kind of change, so the picture shows what is opened and closed.
"""

from __future__ import annotations

from dataclasses import field

from .matrix import ROLE_TITLES, ROLES, Matrix, Peer, Rule, port_text
from .records import dataclass

SHOWN_ADDRESSES = 2  # more than this on a node or an edge is shown as a count
PORTS_PER_LINE = 6
STATUSES = ("same", "removed", "narrowed", "added", "widened")
BREAKING = ("removed", "narrowed")

# (protocol, ports): one line of an edge's label.
Line = tuple[str, "tuple[int, int] | None"]


@dataclass
class Node:
    id: str
    kind: str  # role or peer
    title: str
    cidrs: tuple[str, ...] = ()
    gone: bool = False  # only on the old side of a diff

    @property
    def summary(self) -> str:
        return address_summary(self.cidrs)

    @property
    def label(self) -> str:
        return self.title if self.kind == "role" else f"{self.title}\n{self.summary}"


@dataclass
class Edge:
    id: str
    src: str
    dst: str
    status: str  # same, or the diff's kind of change
    lines: list[Line] = field(default_factory=list)
    cidrs: set[str] = field(default_factory=set)  # addresses of a peer end
    rules: list[Rule] = field(default_factory=list)
    one_sided: dict[Line, str] = field(default_factory=dict)  # line -> the only end
    replies: bool = False  # stateless: return rules answer this edge's flows

    @property
    def site(self) -> bool:
        """Every rule behind it is one of the profile's site flows, none the page's."""
        return bool(self.rules) and all(r.site for r in self.rules)

    @property
    def classes(self) -> str:
        words = ["flow" if self.status == "same" else "change", self.status]
        if self.status in BREAKING:
            words.append("breaking")
        if self.replies:
            words.append("replies")
        if self.site:
            words.append("site")
        return " ".join(words)

    def label_lines(self, peer: Node | None) -> list[str]:
        out = [] if self.status == "same" else [f"{self.status}:"]
        out += _port_lines(self.lines, self.one_sided)
        if self.replies:
            out.append("+ replies")
        if peer is not None and self.cidrs and set(peer.cidrs) != self.cidrs:
            out.append(address_summary(_sorted_cidrs(self.cidrs)))
        return out


@dataclass
class FlowGraph:
    title: str
    cluster: str
    nodes: dict[str, Node]
    edges: list[Edge]
    rule_edges: dict[str, str]  # rule name -> edge id
    change_edges: list[list[str]]  # per change of the diff, its edge ids

    def roles(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "role"]

    def peers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "peer"]

    def peer_of(self, edge: Edge) -> Node | None:
        for end in (edge.src, edge.dst):
            if self.nodes[end].kind == "peer":
                return self.nodes[end]
        return None


def _sorted_cidrs(cidrs) -> tuple[str, ...]:
    from .optimizer import parse_cidr

    return tuple(sorted(set(cidrs), key=parse_cidr))


def address_summary(cidrs: tuple[str, ...]) -> str:
    if len(cidrs) <= SHOWN_ADDRESSES:
        return ", ".join(cidrs)
    return f"{len(cidrs):,} addresses"


def peer_id(name: str | None) -> str:
    return "peer_" + "".join(c if c.isalnum() else "_" for c in (name or "addresses"))


def line_text(line: Line) -> str:
    protocol, ports = line
    if protocol == "all":
        return "all traffic"
    if protocol == "other":
        return "protocols other than tcp/udp"
    return f"{protocol} {port_text(ports)}"


def _port_lines(lines: list[Line], one_sided: dict[Line, str]) -> list[str]:
    """'tcp 22, 2376' per protocol, a few ports a line; odd lines on their own."""
    out: list[str] = []
    runs: dict[str, list[str]] = {}
    for line in sorted(lines, key=_line_order):
        protocol, ports = line
        if protocol in ("all", "other") or line in one_sided:
            note = f" ({one_sided[line]} only)" if line in one_sided else ""
            out.append(line_text(line) + note)
        else:
            runs.setdefault(protocol, []).append(port_text(ports))
    for protocol, ports in runs.items():
        for i in range(0, len(ports), PORTS_PER_LINE):
            out.append(f"{protocol} {', '.join(ports[i:i + PORTS_PER_LINE])}")
    return out


def _line_order(line: Line) -> tuple:
    protocol, ports = line
    return (protocol, ports or (0, 0))


def placed(role, direction, node, protocol, ports, source_ports):
    """(source, destination, line, reply) of traffic seen from `role`'s end.

    A return rule (source ports set) goes on the edge of the flow it answers,
    with that flow's ports.
    """
    src, dst = (node, role) if direction == "ingress" else (role, node)
    if source_ports is not None:
        return dst, src, (protocol, source_ports), True
    return src, dst, (protocol, ports), False


class _Builder:
    def __init__(self, matrix: Matrix, title: str, cluster: str):
        self.graph = FlowGraph(title, cluster, {}, [], {}, [])
        self.by_key: dict[tuple, Edge] = {}
        self.cidrs: dict[str, set[str]] = {}  # peer node -> its addresses
        for role in ROLES:
            if role in matrix.roles():
                self.graph.nodes[role] = Node(role, "role", ROLE_TITLES[role])

    def node_for(self, peer: Peer, gone: bool = False) -> list[str]:
        if peer.role:
            if peer.role not in self.graph.nodes:
                self.graph.nodes[peer.role] = Node(
                    peer.role, "role", ROLE_TITLES[peer.role], gone=gone
                )
            return [peer.role]
        # A diff names a piece after every peer list it came from ("a/b").
        names = (peer.name or "").split("/") if peer.name else [None]
        out = []
        for name in names:
            nid = peer_id(name)
            node = self.graph.nodes.get(nid)
            if node is None:
                node = Node(nid, "peer", name or "addresses", gone=gone)
                self.graph.nodes[nid] = node
            if not gone or node.gone:
                self.cidrs.setdefault(nid, set()).update(peer.cidrs)
            out.append(nid)
        return out

    def edge(self, src: str, dst: str, status: str) -> Edge:
        key = (src, dst, status)
        if key not in self.by_key:
            self.by_key[key] = Edge("", src, dst, status)
        return self.by_key[key]

    def add(self, edge: Edge, line: Line, peer: Peer) -> None:
        if line not in edge.lines:
            edge.lines.append(line)
        edge.cidrs.update(peer.cidrs)

    def finish(self) -> FlowGraph:
        for nid, cidrs in self.cidrs.items():
            self.graph.nodes[nid].cidrs = _sorted_cidrs(cidrs)
        order = {nid: i for i, nid in enumerate(self.graph.nodes)}
        edges = sorted(
            self.by_key.values(),
            key=lambda e: (
                order[e.src],
                order[e.dst],
                STATUSES.index(e.status),
            ),
        )
        for i, edge in enumerate(edges, 1):
            edge.id = f"e{i}"
        self.graph.edges = edges
        return self.graph


def rule_line(rule: Rule) -> Line:
    return (rule.protocol, rule.ports)


def build(
    matrix: Matrix, changes=None, title: str = "", cluster: str = ""
) -> FlowGraph:
    """The graph of `matrix`; with `changes` (diff.Change list), changed traffic too."""
    b = _Builder(matrix, title or matrix.profile, cluster or matrix.profile)
    changed: dict[tuple, str] = {}  # (src, dst, line) -> added
    pending = []
    for rule in matrix.rules:  # nodes of the new side first: they are not gone
        b.node_for(rule.peer)
    for change in changes or ():
        ids: list[Edge] = []
        b.node_for(Peer(role=change.role), gone=True)
        gone = change.kind in BREAKING
        for piece in change.traffic:
            for nid in b.node_for(piece.peer, gone=gone):
                src, dst, line, reply = placed(
                    change.role,
                    change.direction,
                    nid,
                    piece.protocol,
                    piece.ports,
                    piece.source_ports,
                )
                # A new rule is drawn as added; a widened one keeps its arrow and
                # the widening gets its own, labelled with the new addresses.
                if change.kind == "added" and not reply:
                    changed[(src, dst, line)] = change.kind
                pending.append((src, dst, change.kind, line, reply, piece.peer, ids))
        b.graph.change_edges.append(ids)
    sides: dict[tuple, dict[Line, set[str]]] = {}
    for rule in matrix.rules:
        for nid in b.node_for(rule.peer):
            src, dst, line, reply = placed(
                rule.role,
                rule.direction,
                nid,
                rule.protocol,
                rule.ports,
                rule.source_ports,
            )
            status = changed.get((src, dst, line), "same")
            edge = b.edge(src, dst, status)
            b.add(edge, line, rule.peer)
            edge.rules.append(rule)
            edge.replies |= reply
            if rule.peer.role and not reply:
                ends = sides.setdefault((src, dst, status), {})
                ends.setdefault(line, set()).add(rule.direction)
    for key, lines in sides.items():
        for line, directions in lines.items():
            if len(directions) == 1:
                only = "egress" if "egress" in directions else "ingress"
                b.by_key[key].one_sided[line] = only
    for src, dst, kind, line, reply, peer, ids in pending:
        edge = b.edge(src, dst, kind)
        b.add(edge, line, peer)
        edge.replies |= reply
        ids.append(edge)
    graph = b.finish()
    for edge in graph.edges:
        for rule in edge.rules:
            graph.rule_edges.setdefault(rule.name, edge.id)
    graph.change_edges = [
        sorted({e.id for e in ids}, key=lambda i: int(i[1:]))
        for ids in graph.change_edges
    ]
    return graph


def to_dot(graph: FlowGraph, links: bool = False) -> str:
    """Graphviz source; `links` makes every edge a link to its rows in the report."""
    from .templating import render

    return render(
        "report/flows.dot.j2",
        graph=graph,
        links=links,
        quote=quote,
        label=lambda lines: quote("\n".join(lines)),
    )


def quote(text: str) -> str:
    """A DOT quoted string; newlines become centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class DotError(Exception):
    """Graphviz is missing or failed; the message says which and what to do."""


def svg(dot_source: str) -> str:
    """The picture, laid out by Graphviz's dot, as an inline <svg> element."""
    import re
    import shutil
    import subprocess

    dot = shutil.which("dot")
    if dot is None:
        raise DotError(
            "Graphviz's dot is not installed (Debian: apt-get install graphviz)"
        )
    try:
        done = subprocess.run(
            [dot, "-Tsvg"],
            input=dot_source,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DotError("dot took more than 60 s to lay out the diagram") from None
    if done.returncode != 0:
        raise DotError(f"dot failed: {done.stderr.strip()[:500]}")
    text = done.stdout
    # Inline: no XML prolog, no DOCTYPE (its DTD address is never to be fetched).
    start = text.find("<svg")
    if start < 0:
        raise DotError("dot gave no SVG")
    return re.sub(r"<!--.*?-->\n?", "", text[start:], flags=re.S)
