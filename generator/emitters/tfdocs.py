"""A Terraform module's README as terraform-docs writes it (markdown table), read from
the module's own variables.tf, outputs.tf and versions.tf, so it cannot disagree with
them. The reader knows the layout the templates write (top-level blocks, attributes
two spaces in, nested blocks skipped); tests/test_tfdocs.py checks it against
python-hcl2's reading of every example's module.
"""

from __future__ import annotations

import json

_KINDS = ("variable", "output")
_OPEN, _CLOSE = "([{", ")]}"
# Read with string methods: the regular expressions this takes would cost more to
# compile, at every terraform target's run, than reading the three files.


def _header(line: str) -> tuple[str, str] | None:
    """(kind, name) of a block's first line, `variable "name" {`."""
    kind, _, rest = line.partition(" ")
    if kind not in _KINDS or not rest.startswith('"') or not rest.endswith('" {'):
        return None
    name = rest[1:-3]
    return (kind, name) if name and '"' not in name else None


def _attribute(line: str) -> tuple[str, str] | None:
    """(name, value as written) of `  name = value`, two spaces in."""
    if not line.startswith("  "):
        return None
    name, equals, value = line[2:].partition("=")
    name = name.rstrip()
    if not equals or not name.replace("_", "a").isalnum():
        return None
    return name, value.lstrip()


def _attributes(body: str) -> dict[str, str]:
    """A block's own attributes (not those of its nested blocks), values as written."""
    out: dict[str, str] = {}
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        found = _attribute(lines[i])
        i += 1
        if not found:
            continue
        name, value = found
        depth = _depth(value)
        while depth > 0 and i < len(lines):  # a value over several lines
            value += "\n" + lines[i]
            depth += _depth(lines[i])
            i += 1
        out[name] = value.strip()
    return out


def _string_end(text: str, start: int) -> int:
    """Where the string literal opened at `start` ends (after its closing quote; a
    backslash escapes any character but a line break), or -1 if it does not."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return i + 1
        if char == "\\":
            if i + 1 == len(text) or text[i + 1] == "\n":
                return -1
            i += 1
        i += 1
    return -1


def _depth(text: str) -> int:
    kept, i = [], 0  # brackets inside strings count not
    while (quote := text.find('"', i)) >= 0:
        end = _string_end(text, quote)
        kept.append(text[i:quote] if end > 0 else text[i : quote + 1])
        i = end if end > 0 else quote + 1
    kept.append(text[i:])
    text = "".join(kept)
    return sum(text.count(c) for c in _OPEN) - sum(text.count(c) for c in _CLOSE)


def _string(value: str) -> str:
    return json.loads(value) if value.startswith('"') else value


def blocks(text: str, kind: str) -> list[tuple[str, dict[str, str]]]:
    """(name, attributes) of every `variable` or `output` block, in file order: from
    its first line to the next line that starts with a closing brace."""
    out = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        head = _header(lines[i])
        i += 1
        if head is None or i == len(lines):
            continue
        start = i
        while i < len(lines) and not lines[i].startswith("}"):
            i += 1
        if i == len(lines):
            break  # not closed
        if head[0] == kind:
            out.append((head[1], _attributes("\n".join(lines[start:i]) + "\n")))
        i += 1
    return out


def _quoted_after(text: str, key: str) -> str | None:
    """The string of the first `key = "value"` in text."""
    at = text.find(key)
    while at >= 0:
        rest = text[at + len(key) :].lstrip()
        if rest.startswith("="):
            rest = rest[1:].lstrip()
            value, closed, _ = rest[1:].partition('"')
            if rest.startswith('"') and closed and value:
                return value
        at = text.find(key, at + 1)
    return None


def _blank(line: str) -> bool:
    return not line or line.isspace()


def _provider(lines: list[str], at: int, free: int) -> str | None:
    """The name of a `  name = {` line at `at`, indented (or after a blank line
    from `free` on), with a line after it."""
    line = lines[at]
    name = line.lstrip().removesuffix(" = {")
    if name == line.lstrip() or not name.replace("_", "a").isalnum():
        return None
    if at + 1 == len(lines):
        return None
    if line[:1].isspace() or (at > free and _blank(lines[at - 1])):
        return name
    return None


def _closing(lines: list[str], first: int) -> tuple[int, int] | None:
    """(end of the body, line of the closing brace): the first line from `first` on
    where, after blank lines or indentation, a `}` closes the block."""
    for end in range(first, len(lines)):
        close = end
        while close < len(lines) and _blank(lines[close]):
            close += 1
        if close == len(lines):
            return None
        if lines[close].lstrip().startswith("}") and (
            close > end or lines[close][:1].isspace()
        ):
            return end, close
    return None


def requirements(versions_tf: str) -> list[tuple[str, str]]:
    """Terraform's required version, then each provider's (`name = {` on a line
    of its own, its body, an indented `}`), as versions.tf.j2 writes them."""
    rows = []
    required = _quoted_after(versions_tf, "required_version")
    if required:
        rows.append(("terraform", required))
    lines = versions_tf.split("\n")
    at = free = 0
    while at < len(lines):
        name = _provider(lines, at, free)
        found = name and _closing(lines, at + 2)
        if not found:
            at += 1
            continue
        end, close = found
        version = _quoted_after("\n".join(lines[at + 1 : end]), "version")
        rows.append((name, version or "n/a"))
        at = free = close + 1
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
