"""The engines verify can load (iptables, nftables): the files `rulegen generate` writes
for one (less any rule a run drops), writing them into a run's folder, and the tools
each engine and the bed need on this machine.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ..matrix import Matrix, Rule
from .model import VerifyError

ENGINES = ("iptables", "nftables")  # host-firewall targets verify can load


def ruleset(
    matrix: Matrix, profile, drop: list[Rule] = (), engine: str = "iptables"
) -> dict[str, str]:
    """The files `rulegen generate` writes for the engine, less any dropped rule."""
    from dataclasses import replace

    from ..emitters import TARGETS
    from ..pipeline import files_for

    if drop:
        matrix = replace(matrix, rules=tuple(r for r in matrix.rules if r not in drop))
    files = files_for(profile, matrix, [TARGETS[engine]])
    return {path.split("/", 1)[1]: text for path, text in files.items()}


def write_files(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).write_text(text)


def preflight(needs_ipset: bool = False, engine: str = "iptables") -> None:
    if sys.platform != "linux":
        raise VerifyError("verify needs Linux network namespaces")
    if os.geteuid() != 0:
        raise VerifyError("verify needs root: it creates network namespaces")
    # iptables also for the test bed's NAT and the operator's rule
    tools = ["ip", "iptables", "iptables-restore"] + (["ipset"] if needs_ipset else [])
    tools += ["nft"] if engine == "nftables" else []
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise VerifyError(
            f"verify needs {', '.join(missing)}:"
            " apt-get install iproute2 iptables ipset nftables"
        )
