"""The versioned rule catalog (catalog.yaml): flows per release line, as data."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .matrix import ROLES

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
PEERS = ("external", "internet", "vcs", "dns", "ssh_admin", "ssh_rerun")


@dataclass(frozen=True)
class Flow:
    id: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    protocols: tuple[str, ...]
    ports: tuple[tuple[int, int], ...] | None  # None: every port (protocol all)
    purpose: str
    purpose_by_line: dict
    lines: tuple[str, ...]
    obsolete: tuple[str, ...]
    when: dict
    public_ip: str | None
    refs: dict
    caution: dict
    notes: dict  # release line (or "all") -> how an unclear row was read

    def note(self, line: str) -> str | None:
        return self.notes.get(line, self.notes.get("all"))

    def status(self, line: str) -> str | None:
        if line in self.lines:
            return "current"
        if line in self.obsolete:
            return "obsolete"
        return None


@dataclass(frozen=True)
class Catalog:
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


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _tuple(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _ports(value) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    return tuple((p[0], p[1]) if isinstance(p, list) else (p, p) for p in value)


def parse_catalog(data: dict) -> Catalog:
    known = set(ROLES) | set(PEERS)
    lines = data["release_lines"]
    flows = []
    for raw in data["flows"]:
        flow = Flow(
            id=raw["id"],
            sources=_tuple(raw["from"]),
            destinations=_tuple(raw["to"]),
            protocols=_tuple(raw["protocol"]),
            ports=_ports(raw.get("ports")),
            purpose=raw["purpose"],
            purpose_by_line=raw.get("purpose_by_line", {}),
            lines=_tuple(raw.get("lines")),
            obsolete=_tuple(raw.get("obsolete")),
            when=raw.get("when", {}),
            public_ip=raw.get("public_ip"),
            refs=raw.get("refs", {}),
            caution=raw.get("caution", {}),
            notes=raw.get("notes", {}),
        )
        for end in flow.sources + flow.destinations:
            if end not in known:
                raise ValueError(f"catalog flow {flow.id}: unknown end {end!r}")
        for line in flow.lines + flow.obsolete + tuple(set(flow.notes) - {"all"}):
            if line not in lines:
                raise ValueError(
                    f"catalog flow {flow.id}: unknown release line {line!r}"
                )
        if (flow.ports is None) != (flow.protocols == ("all",)):
            raise ValueError(f"catalog flow {flow.id}: ports go with tcp/udp only")
        flows.append(flow)
    ids = [f.id for f in flows]
    if len(ids) != len(set(ids)):
        raise ValueError("catalog: duplicate flow ids")
    return Catalog(lines, tuple(flows), tuple(data.get("isolated_roles", ())))


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster
    return parse_catalog(yaml.load(CATALOG_PATH.read_text(), Loader=loader))
