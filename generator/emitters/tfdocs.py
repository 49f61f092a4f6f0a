"""A Terraform module's README as terraform-docs writes it (markdown table), read from
the module's own variables.tf, outputs.tf and versions.tf, so it cannot disagree with
them. The reader knows the layout the templates write (top-level blocks, attributes
two spaces in, nested blocks skipped); tests/test_tfdocs.py checks it against
python-hcl2's reading of every example's module.
"""

from __future__ import annotations

import json
import re

_BLOCK = re.compile(r'^(variable|output) "([^"]+)" \{\n(.*?)^\}', re.M | re.S)
_ATTRIBUTE = re.compile(r"^  (\w+)\s*=\s*(.*)$")
_OPEN, _CLOSE = "([{", ")]}"


def _attributes(body: str) -> dict[str, str]:
    """A block's own attributes (not those of its nested blocks), values as written."""
    out: dict[str, str] = {}
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        found = _ATTRIBUTE.match(lines[i])
        i += 1
        if not found:
            continue
        name, value = found.groups()
        depth = _depth(value)
        while depth > 0 and i < len(lines):  # a value over several lines
            value += "\n" + lines[i]
            depth += _depth(lines[i])
            i += 1
        out[name] = value.strip()
    return out


def _depth(text: str) -> int:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)  # brackets inside strings count not
    return sum(text.count(c) for c in _OPEN) - sum(text.count(c) for c in _CLOSE)


def _string(value: str) -> str:
    return json.loads(value) if value.startswith('"') else value


def blocks(text: str, kind: str) -> list[tuple[str, dict[str, str]]]:
    """(name, attributes) of every `variable` or `output` block, in file order."""
    return [
        (name, _attributes(body))
        for found_kind, name, body in _BLOCK.findall(text)
        if found_kind == kind
    ]


def requirements(versions_tf: str) -> list[tuple[str, str]]:
    rows = []
    required = re.search(r'required_version\s*=\s*"([^"]+)"', versions_tf)
    if required:
        rows.append(("terraform", required.group(1)))
    for name, body in re.findall(
        r"^\s+(\w+) = \{\n(.*?)\n\s+\}", versions_tf, re.M | re.S
    ):
        version = re.search(r'version\s*=\s*"([^"]+)"', body)
        rows.append((name, version.group(1) if version else "n/a"))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def _description(attrs: dict[str, str]) -> str:
    return _cell(_string(attrs["description"])) if "description" in attrs else "n/a"


def _name(kind: str, name: str) -> str:
    escaped = name.replace("_", "\\_")
    return f'<a name="{kind}_{name}"></a> [{escaped}](#{kind}\\_{escaped})'


def _code(value: str) -> str:
    # terraform-docs fences a multi-line type or default as HCL in a <pre> block.
    if "\n" in value:
        return f"<pre>{_cell(value)}</pre>"
    return f"`{_cell(value)}`"


def readme(title: str, intro: list[str], files: dict[str, str], usage: str = "") -> str:
    """README.md of the module whose files (by name) are given; `intro` starts it
    (the generator's header first), then the title's paragraph."""
    lines = [*intro[:1], "", f"# {title}", "", *intro[1:], ""]
    if usage:
        lines += ["## Usage", "", "```hcl", usage.rstrip("\n"), "```", ""]
    lines += ["<!-- BEGIN_TF_DOCS -->", "## Requirements", ""]
    lines += ["| Name | Version |", "|------|---------|"]
    lines += [
        f"| {_name('requirement', n)} | {_cell(v)} |"
        for n, v in requirements(files.get("versions.tf", ""))
    ]
    lines += ["", "## Inputs", ""]
    lines += [
        "| Name | Description | Type | Default | Required |",
        "|------|-------------|------|---------|:--------:|",
    ]
    for name, attrs in blocks(files.get("variables.tf", ""), "variable"):
        default = attrs.get("default")
        cells = [
            _name("input", name),
            _description(attrs),
            _code(attrs.get("type", "any")),
            "n/a" if default is None else _code(default),
            "yes" if default is None else "no",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    lines += [
        f"| {_name('output', name)} | {_description(attrs)} |"
        for name, attrs in blocks(files.get("outputs.tf", ""), "output")
    ]
    lines += ["<!-- END_TF_DOCS -->"]
    return "\n".join(lines) + "\n"
