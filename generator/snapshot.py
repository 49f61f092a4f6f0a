"""Snapshots: the matrix and the emitted files' hashes of one install, as stable JSON.

A snapshot is committed next to an install's code, so that a later profile (or a later
rulegen) can be diffed against what is deployed. It is also one side of `rulegen diff`.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from . import __version__
from .filediff import Side
from .matrix import Matrix
from .problems import ProblemError, clip, read_text, shorten

FORMAT = 1
SCHEMA_PATH = Path(__file__).with_name("snapshot.schema.json")


class SnapshotError(ProblemError):
    """A snapshot that cannot be read; str() lists every problem."""


def emitted(matrix: Matrix, profile) -> tuple[dict[str, str], dict[str, str]]:
    """Every file of the profile's default targets, and the targets that gave none.

    A target that cannot express this matrix, or hold it within its quotas, is
    reported by name rather than stopping the diff: the traffic comparison does not
    need it.
    """
    from .emitters import EmitError, targets_for
    from .pipeline import files_for

    files: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for target in targets_for(profile.cloud):
        try:
            files.update(files_for(profile, matrix, [target]))
        except EmitError as exc:
            unavailable[target.name] = str(exc)
    return files, unavailable


def side_from_profile(
    path: str, version: str | None = None, text: str | None = None
) -> Side:
    """One side of a diff from a profile; `text` when already read (standard input
    can be read only once)."""
    from .pipeline import shipped_matrix
    from .profile import load_profile, parse_profile
    from .writer import digest

    if text is None:
        profile = load_profile(path, version)
    else:
        profile = parse_profile(text, "<stdin>" if path == "-" else path, version)
    label = path
    if version:
        label += f" (server_version {version})"
    matrix = shipped_matrix(profile, optimized=False)
    # Files as `generate` writes them (from the optimized matrix); the matrix kept is
    # the planner's, one rule per flow, which the semantic diff reads the same way.
    shipped = shipped_matrix(profile)
    texts, unavailable = emitted(shipped, profile)
    from .nacl import as_matrix, layer_for

    layer = layer_for(profile, shipped)
    return Side(
        label=label,
        kind="profile",
        matrix=matrix,
        files={p: digest(t) for p, t in sorted(texts.items())},
        texts=texts,
        unavailable=unavailable,
        acls=as_matrix(layer, shipped) if layer else None,
    )


def build(side: Side) -> dict:
    """The snapshot of a planned profile, keys in a fixed order."""
    return {
        "format": FORMAT,
        "rulegen": __version__,
        "matrix": side.matrix.to_dict(),
        "files": dict(sorted(side.files.items())),
        "not_emitted": dict(sorted(side.unavailable.items())),
    }


def dumps(snapshot: dict) -> str:
    return json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n"


def looks_like_snapshot(text: str) -> bool:
    if not text.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "format" in data and "matrix" in data


def parse_snapshot(text: str, source: str) -> Side:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SnapshotError([f"{source}: not JSON: {exc}"]) from None
    except RecursionError:
        raise SnapshotError([f"{source}: nested too deep to be a snapshot"]) from None
    if not isinstance(data, dict) or "format" not in data:
        raise SnapshotError([f"{source}: not a rulegen snapshot (no 'format' field)"])
    if data["format"] != FORMAT:
        raise SnapshotError(
            [
                f"{source}: snapshot format {shorten(data['format'])} is not supported by"
                f" rulegen {__version__} (it reads format {FORMAT}); make the snapshot"
                " again with this rulegen"
            ]
        )
    try:
        problems = _schema_problems(data, source) or _address_problems(data, source)
    except RecursionError:
        problems = [f"{source}: nested too deep to be a snapshot"]
    if problems:
        raise SnapshotError(problems)
    return Side(
        label=source,
        kind="snapshot",
        matrix=Matrix.from_dict(data["matrix"]),
        files=dict(data["files"]),
        texts=None,
        unavailable=dict(data.get("not_emitted", {})),
    )


def _schema_problems(data: dict, source: str) -> list[str]:
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        where = where if len(where) < 120 else f"{where[:50]}...{where[-50:]}"
        problems.append(f"{source}: {where}: {clip(error.message)}")
    return problems[:20]


def _address_problems(data: dict, source: str) -> list[str]:
    problems = []
    for i, rule in enumerate(data["matrix"]["rules"]):
        for key in ("ports", "source_ports"):
            ports = rule.get(key)
            if ports and ports[0] > ports[1]:
                problems.append(
                    f"{source}: matrix.rules.{i}.{key}: {ports[0]}-{ports[1]} is empty"
                )
        for cidr in rule["peer"].get("cidrs", []):
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                problems.append(
                    f"{source}: matrix.rules.{i}.peer.cidrs: {shorten(cidr)} is not a CIDR"
                    " block"
                )
    return problems


def load_side(path: str, version: str | None = None, option: str = "") -> Side:
    """A profile or a snapshot, told apart by content; raises ProfileError/SnapshotError."""
    text = read_text(path, SnapshotError)
    # A .json file is read as a snapshot, so that a broken one gets a snapshot's message.
    if looks_like_snapshot(text) or Path(path).suffix == ".json":
        if version:
            raise SnapshotError(
                [
                    f"{path} is a snapshot: its server version is fixed;"
                    f" {option or 'a version override'} applies to a profile only"
                ]
            )
        return parse_snapshot(text, path)
    return side_from_profile(path, version, text)
