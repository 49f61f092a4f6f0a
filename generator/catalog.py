"""The versioned rule catalog (catalog.yaml): flows per release line, as data.

The page's flows and a profile's site flows share one shape and one parser
(read_flow), which reports each problem with its key path for the caller to place.
"""

from __future__ import annotations

import json
from dataclasses import field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .matrix import ROLES, ROLE_TITLES
from .records import dataclass

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
CATALOG_JSON = CATALOG_PATH.with_suffix(".json")  # its copy: see load_catalog
PEERS = (
    "external",
    "internet",
    "vcs",
    "dns",
    "ssh_admin",
    "ssh_rerun",
    # Nomad servers outside the cluster: where their balancer is reached, and where
    # its health checks come from.
    "nomad_server_balancer",
    "nomad_server_health_checks",
)
PROTOCOL_NAMES = ("tcp", "udp", "all")
# Why the page forbids traffic between two instances of one role.
ISOLATION_REASONS = {
    "nomad_clients": "the page says Nomad clients need no traffic between them and asks"
    " to block it completely (jobs of different projects run side by side on them)",
    "external_vms": "the page says external VMs, like Nomad clients, need no traffic"
    " between them (each VM runs one job, which must not reach another's)",
}


@dataclass(frozen=True)
class Flow:
    """One flow of the page (or a profile's site flow): its ends, ports, lines."""

    id: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocols: tuple[str, ...]
    ports: tuple[tuple[int, int], ...] | None  # None: every port (protocol all)
    purpose: str
    purpose_by_line: dict
    lines: tuple[str, ...]
    # release line -> the page's egress table that no longer lists the flow
    obsolete: dict
    when: dict
    public_ip: str | None
    refs: dict
    caution: dict
    notes: dict  # release line (or "all") -> how an unclear row was read
    ports_by_line: dict = field(default_factory=dict)
    refs_by_line: dict = field(default_factory=dict)
    document: str | None = None  # the source of a flow the page does not print
    # Site flows (a profile's own): always current, cited by their reference.
    site: bool = False
    reference: str | None = None
    key: str = ""  # where the flow was written, e.g. site_flows[2]
    acknowledge_isolation: bool = False
    # On a host firewall: True, job containers make the flow (it may name addresses
    # they may otherwise not reach); False, only the host's own agents do; None, jobs
    # follow it outside the ranges kept from them.
    jobs: bool | None = None

    def note(self, line: str) -> str | None:
        return self.notes.get(line, self.notes.get("all"))

    def ports_for(self, line: str) -> tuple[tuple[int, int], ...] | None:
        return self.ports_by_line.get(line, self.ports)

    def refs_for(self, line: str) -> dict:
        return {**self.refs, **self.refs_by_line.get(line, {})}

    def dropped_by(self, line: str) -> str | None:
        """The line's egress table that no longer lists an obsolete flow."""
        return self.obsolete.get(line)

    def status(self, line: str) -> str | None:
        if self.site:
            return "current"
        if line in self.lines:
            return "current"
        if line in self.obsolete:
            return "obsolete"
        return None


@dataclass(frozen=True)
class Catalog:
    """The release lines, the flows of every line, and the roles kept apart."""

    release_lines: dict
    flows: tuple[Flow, ...]
    isolated_roles: tuple[str, ...]

    def line_of(self, version: str) -> str:
        for line, info in self.release_lines.items():
            if version in info["versions"]:
                return line
        raise KeyError(version)

    def title(self, line: str) -> str:
        return self.release_lines[line]["title"]

    def summary(self) -> list[str]:
        """The release lines, the versions each covers and the page it was read from."""
        rows = []
        for line, info in self.release_lines.items():
            versions = info["versions"]
            covers = (
                versions[0] if len(versions) == 1 else f"{versions[0]}-{versions[-1]}"
            )
            rows.append((line, f"server {covers}", info.get("read_from", "")))
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        return [
            f"  {a.ljust(width[0])}  {b.ljust(width[1])}  read from {c}"
            for a, b, c in rows
        ]


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


Problem = Callable[[tuple, str], None]


def _tuple(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _port(value, path: tuple, problem: Problem) -> tuple[int, int] | None:
    """One port, "low-high", or [low, high]; None (reported) if it is none of these."""
    if isinstance(value, str):
        low, sep, high = value.partition("-")
        if low.strip().isdigit() and (not sep or high.strip().isdigit()):
            value = [int(low), int(high)] if sep else int(low)
    if isinstance(value, list) and len(value) == 2:
        first = _port(value[0], path + (0,), problem)
        last = _port(value[1], path + (1,), problem)
        if first is None or last is None:
            return None
        if first[0] > last[0]:
            problem(path, f"range {first[0]}-{last[0]} runs backwards")
            return None
        return first[0], last[0]
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value, value
        problem(path, f"port {value} is out of range 1-65535")
        return None
    problem(
        path,
        f"{value!r} is not a port: expected a number, a range such as 30000-32767"
        " or [30000, 32767]",
    )
    return None


def _ports(value, problem: Problem) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    # [30000, 32767] alone is two ports, as in the catalog; a range inside a list
    # is written [[30000, 32767]] or "30000-32767".
    if not items:
        problem(("ports",), "expected at least one port")
        return ()
    path = ("ports",) if not isinstance(value, list) else None
    out = []
    for i, item in enumerate(items):
        port = _port(item, path or ("ports", i), problem)
        if port is not None:
            out.append(port)
    return tuple(out)


def _guess(value, known) -> str:
    import difflib  # only for a bad flow: costs 2 ms at start-up

    guess = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.6)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def _ends(raw: dict, key: str, known, problem: Problem, what: str) -> tuple:
    ends = _tuple(raw.get(key))
    if not ends:
        problem((key,), "expected a role or a peer list, or a list of them")
    for i, end in enumerate(ends):
        path = (key,) if not isinstance(raw.get(key), list) else (key, i)
        if not isinstance(end, str):
            problem(path, f"expected a name, got {end!r}")
        elif end not in known:
            problem(path, f"unknown end {end!r}: not {what}{_guess(end, known)}")
    return ends


def read_flow(
    raw: dict,
    known,
    problem: Problem,
    *,
    site: bool = False,
    isolated: tuple[str, ...] = (),
    key: str = "",
) -> Flow:
    """One flow from its catalog shape; every problem goes to problem(path, message).

    A site flow (a profile's own) also needs a role at one end of each pair, and an
    explicit acknowledgement to join two instances of a role the page isolates.
    """
    what = "a role or a peer list" if site else "a role or a catalog peer"
    sources = _ends(raw, "from", known, problem, what)
    destinations = _ends(raw, "to", known, problem, what)
    protocols = _tuple(raw.get("protocol"))
    if not protocols:  # protocol: [] would make no rule, silently
        problem(("protocol",), "expected tcp, udp or all, or a list of tcp and udp")
    for i, protocol in enumerate(protocols):
        if protocol not in PROTOCOL_NAMES:
            path = ("protocol",) if len(protocols) == 1 else ("protocol", i)
            problem(
                path,
                f"unknown protocol {protocol!r}; expected tcp, udp or all"
                f"{_guess(protocol, PROTOCOL_NAMES)}",
            )
    ports = _ports(raw.get("ports"), problem)
    if "all" in protocols and len(protocols) > 1:
        problem(("protocol",), "all already takes in tcp and udp: list it alone")
    elif protocols == ("all",) and ports is not None:
        problem(("ports",), "protocol all matches every port: leave ports out")
    elif protocols and "all" not in protocols and ports is None:
        problem(("ports",), "ports go with tcp/udp: list them (or use protocol all)")
    flow_id = raw.get("id") or key
    acknowledged = bool(raw.get("acknowledge_isolation", False))
    jobs = raw.get("jobs")
    if jobs is not None and not isinstance(jobs, bool):
        problem(("jobs",), f"expected true or false, got {jobs!r}")
        jobs = None
    if site:
        roles = set(ROLES)
        for src in sources:
            for dst in destinations:
                if src not in known or dst not in known:
                    continue  # reported above
                if src not in roles and dst not in roles:
                    problem(
                        ("to",),
                        f"{src} to {dst}: neither end is a role; a site flow opens"
                        " a role's firewall, so one end at least must be a role",
                    )
                elif src == dst and src in isolated and not acknowledged:
                    problem(
                        ("to",),
                        f"{ROLE_TITLES[src]} to {ROLE_TITLES[src]} is refused:"
                        f" {ISOLATION_REASONS.get(src, 'the page isolates them')};"
                        " add acknowledge_isolation: true to open it anyway",
                    )
        if acknowledged and not any(
            s == d and s in isolated for s in sources for d in destinations
        ):
            problem(
                ("acknowledge_isolation",),
                "nothing to acknowledge: the flow joins no role the page isolates",
            )
    return Flow(
        id=flow_id,
        sources=sources,
        destinations=destinations,
        protocols=protocols,
        ports=ports,
        purpose=raw.get("purpose", ""),
        purpose_by_line=raw.get("purpose_by_line", {}),
        lines=_tuple(raw.get("lines")),
        obsolete=dict(raw.get("obsolete") or {}),
        when=raw.get("when", {}),
        public_ip=raw.get("public_ip"),
        refs=raw.get("refs", {}),
        caution=raw.get("caution", {}),
        notes=raw.get("notes", {}),
        ports_by_line={
            line: _ports(value, problem)
            for line, value in (raw.get("ports_by_line") or {}).items()
        },
        refs_by_line=raw.get("refs_by_line") or {},
        document=raw.get("document"),
        site=site,
        reference=raw.get("reference"),
        key=key,
        acknowledge_isolation=acknowledged,
        jobs=jobs,
    )


def parse_catalog(data: dict) -> Catalog:
    known = set(ROLES) | set(PEERS)
    lines = data["release_lines"]
    flows = []
    for raw in data["flows"]:

        def problem(path, message, flow_id=raw.get("id")):
            raise ValueError(f"catalog flow {flow_id}: {message}")

        flow = read_flow(raw, known, problem)
        named = (
            *flow.lines,
            *flow.obsolete,
            *flow.ports_by_line,
            *flow.refs_by_line,
            *(set(flow.notes) - {"all"}),
        )
        for line in named:
            if line not in lines:
                raise ValueError(
                    f"catalog flow {flow.id}: unknown release line {line!r}"
                )
        flows.append(flow)
    ids = [f.id for f in flows]
    if len(ids) != len(set(ids)):
        raise ValueError("catalog: duplicate flow ids")
    return Catalog(lines, tuple(flows), tuple(data.get("isolated_roles", ())))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The shipped catalog: from catalog.json while it is catalog.yaml's copy (made by
    scripts/compile_catalog.py), else from the YAML itself."""
    text = CATALOG_PATH.read_bytes()
    try:
        copy = json.loads(CATALOG_JSON.read_bytes())
        if copy["yaml_sha256"] == yaml_digest(text):
            return parse_catalog(copy["catalog"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return parse_catalog(read_yaml(text))


def read_yaml(text: bytes) -> dict:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster
    return yaml.load(text.decode("utf-8"), Loader=loader)


def yaml_digest(text: bytes) -> str:
    import hashlib

    return hashlib.sha256(text).hexdigest()
