"""Readers: one module per live source, registered in READERS (as emitters in TARGETS).

A reader is `read(inputs, context) -> Live`: it turns the standard export of a tool
(`aws ec2 describe-security-groups`, `gcloud compute firewall-rules list`,
`iptables-save`, `nft -j list ruleset`) into rules of the matrix model, with the
platform's own semantics (AWS union of allow rules and default egress, GCP priorities
and implied rules, iptables and nftables evaluation order). `rulegen audit` compares
what a reader gives back with the profile's matrix through the one semantic diff.
Anything a reader cannot evaluate is reported as a finding, never dropped.
"""

from __future__ import annotations

from dataclasses import field
from importlib import import_module

from ..matrix import Matrix
from ..problems import ProblemError
from ..records import dataclass


class ReadError(ProblemError):
    """An export that cannot be read: every problem with file, line or key path."""


MAX_EXPORT = 256 * 1024 * 1024  # far above any real export; refuses a runaway file


def read_export(path: str) -> str:
    """An export's text, or ReadError saying why not (missing, too big, not UTF-8)."""
    import os

    from ..problems import read_text

    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0  # read_text says why
    if size > MAX_EXPORT:
        raise ReadError([f"{path}: {size} bytes, more than any export ({MAX_EXPORT})"])
    return read_text(path, ReadError)


def load_json(text: str, path: str):
    """Parsed JSON, or ReadError with the line where it stops (a truncated export)."""
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadError(
            [
                f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); is the export truncated?"
            ]
        ) from None
    except RecursionError:
        raise ReadError([f"{path}: JSON nested too deeply to be an export"]) from None


@dataclass(frozen=True)
class Finding:
    """Something in the export the reader could not evaluate, or left out on purpose."""

    role: str | None
    where: str  # file:line or file: key path
    text: str  # the live construct, as written
    why: str
    direction: str | None = None
    icmp: tuple = ()  # ICMP allowed: (peer interval, type interval) boxes

    def to_dict(self) -> dict:
        return {
            "role": self.role,
            "where": self.where,
            "rule": self.text,
            "why": self.why,
        }


@dataclass
class Live:
    """What a live firewall allows, as a matrix, and what the reader could not say."""

    matrix: Matrix
    roles: tuple[str, ...]  # the roles the export speaks for
    families: tuple[int, ...] = (4, 6)  # address families the export covers
    stateful: bool = True  # replies to allowed connections pass by themselves
    unknown: list[Finding] = field(default_factory=list)  # could not evaluate
    icmp: list[Finding] = field(default_factory=list)  # the ICMP each rule allows
    notes: list[str] = field(default_factory=list)
    # Host readers: what reaches a container through DNAT (the forward path), as the
    # role's ingress rules by the original port; None where it is not read.
    forward: Matrix | None = None
    forward_families: tuple[int, ...] = ()  # the families whose forward path was read
    # Host readers: what passes for packets conntrack calls INVALID or UNTRACKED
    # beyond what passes for new connections (only adds to the excess); None: nothing.
    also: Matrix | None = None


@dataclass
class Context:
    """What a reader needs besides the export: the profile and the caller's options."""

    profile: object
    role: str | None = None
    interface: str | None = None  # iptables/nft: the host's network interface
    groups: tuple[tuple[str, str], ...] = ()  # aws: (role, group id or name)


@dataclass(frozen=True)
class Reader:
    name: str
    module: str
    target: str  # the emitter whose output this reader reads back (its capabilities)
    per_role: bool  # one export per host: --role says which role it is

    def reader(self):
        return import_module(f"{__name__}.{self.module}")


# The one table of readers, mirroring emitters.TARGETS.
READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader("aws", "aws", "terraform-aws", per_role=False),
        Reader("gcp", "gcp", "gcp-firewall", per_role=False),
        Reader("iptables", "iptables", "iptables", per_role=True),
        Reader("nft", "nft", "nftables", per_role=True),
    )
}
