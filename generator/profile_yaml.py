"""A profile's YAML, read as plain data with the line of every key path.

Plain data only: no tags, no recursive aliases, no alias bombs, bounded depth. Scalars
are read as YAML 1.2 (the core schema) reads them, not as PyYAML's YAML 1.1: 18:12:15
is a string, not 65535 in base 60; yes, no, on and off are strings, not booleans;
0777 is 777; dates stay text. Merge keys (<<) are kept. Every problem names its line;
`dotted` and `where` say a key path the way every profile message does.
"""

from __future__ import annotations

import functools
import re

from .problems import ProblemError, shorten

MAX_DEPTH = 64  # a profile nests 4 levels deep
MAX_NODES = 1_000_000  # values once aliases are expanded; 70,000 addresses are 71,000
TAG = "tag:yaml.org,2002:"
MERGE_TAG = TAG + "merge"
# The YAML 1.2 core schema's plain scalars, each with the characters it can start with.
CORE_SCALARS = (
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
    ("merge", r"^<<$", ["<"]),  # not in the core schema, but profiles use it
)


class _Pattern:
    """A pattern compiled at its first match: compiling the four costs more than
    reading a short profile, and most profiles never use some of them."""

    __slots__ = ("source", "compiled")

    def __init__(self, source: str):
        self.source, self.compiled = source, None

    def match(self, text: str):
        if self.compiled is None:
            self.compiled = re.compile(self.source)
        return self.compiled.match(text)


class _Refused(Exception):
    def __init__(self, mark, message):
        super().__init__(message)
        self.mark, self.message = mark, message


@functools.lru_cache(maxsize=None)
def _core_resolver():
    """A resolver that tags plain scalars as the YAML 1.2 core schema does."""
    import yaml

    scalar_node, text_tag = yaml.ScalarNode, TAG + "str"

    class CoreResolver(yaml.resolver.BaseResolver):
        yaml_implicit_resolvers: dict = {}

        def resolve(self, kind, value, implicit):
            # Most plain scalars of a long profile are addresses; a slash, a
            # colon or a second dot is in no null, boolean or number.
            if kind is scalar_node and (
                "/" in value or ":" in value or value.count(".") > 1
            ):
                return text_tag
            return super().resolve(kind, value, implicit)

    for name, pattern, first in CORE_SCALARS:
        CoreResolver.add_implicit_resolver(TAG + name, _Pattern(pattern), first)
    return CoreResolver


@functools.lru_cache(maxsize=None)
def _fast_loader_class():
    """libyaml's parser and composer with the core resolver: for text without tags,
    anchors or aliases."""
    import yaml

    parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class FastLoader(_core_resolver(), parser):  # its resolvers first
        pass

    return FastLoader


@functools.lru_cache(maxsize=None)
def _loader_class():
    """libyaml's parser (ten times faster on long lists) under a composer that takes
    plain data only: no tags, no recursive aliases, bounded depth."""
    import yaml
    from yaml.composer import Composer
    from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

    class PlainComposer(Composer):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                if event.anchor in self.open_anchors:
                    raise _Refused(
                        event.start_mark,
                        f"alias *{event.anchor} is inside the value it names"
                        " (a recursive alias)",
                    )
                return super().compose_node(parent, index)
            if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag:
                tag = event.tag.replace("tag:yaml.org,2002:", "!!")
                raise _Refused(
                    event.start_mark,
                    f"YAML tag {shorten(tag)} is not allowed: a profile is plain"
                    " data; remove the tag",
                )
            if len(self.open_anchors) + self.depth >= MAX_DEPTH:
                raise _Refused(
                    event.start_mark, f"nested more than {MAX_DEPTH} levels deep"
                )
            self.depth += 1
            self.open_anchors.append(event.anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self.open_anchors.pop()
                self.depth -= 1

    try:
        from yaml.cyaml import CParser as parser
    except ImportError:  # PyYAML built without libyaml
        parser = None

    resolver = _core_resolver()

    class Loader(PlainComposer, resolver, parser or yaml.SafeLoader):
        def __init__(self, stream):
            (parser or yaml.SafeLoader).__init__(self, stream)
            Composer.__init__(self)
            resolver.__init__(self)
            self.open_anchors, self.depth = [], 0

    return Loader


def read_yaml(text: str, source: str, error: type[ProblemError]) -> tuple[object, dict]:
    """The data of `text` and the line of each key path, or `error` listing the
    problems."""
    import yaml

    try:
        if any(mark in text for mark in "!&*"):  # maybe tags, anchors or aliases
            loader = _loader_class()(text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
            if node is not None:
                _expanded_size(node, {})
        else:  # plain data: libyaml's own composer, twice as fast
            node = yaml.compose(text, Loader=_fast_loader_class())
    except _Refused as exc:
        raise error([f"{source}:{exc.mark.line + 1}: {exc.message}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char)
        raise error(
            [f"{source}:{line}: not valid YAML: character #x{code:04x} is not allowed"]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise error([f"{where}: not valid YAML: {problem}"]) from None
    if node is None:
        raise error([f"{source}: the profile is empty"])
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    data = _walk(node, (), lines, problems, source)
    if problems:
        raise error(problems)
    return data, lines


def _expanded_size(node, memo: dict) -> int:
    """How many values `node` stands for once aliases are expanded; refuses an
    alias bomb (a few lines that expand to billions) before anything is built."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value
        )
    else:
        size = 1
    if size > MAX_NODES:
        raise _Refused(
            node.start_mark,
            f"more than {MAX_NODES:,} values once aliases are expanded; not read",
        )
    memo[id(node)] = size
    return size


def _scalar(node):
    """A plain scalar's value as the YAML 1.2 core schema reads it; ValueError when
    it cannot be read (a number of more than 4,300 digits)."""
    tag, text = node.tag.removeprefix(TAG), node.value
    if tag == "null":
        return None
    if tag == "bool":
        return text.lower() == "true"
    if tag == "int":
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)
    if tag == "float":
        low = text.lower()
        if low.endswith(".inf"):
            return float(low.replace(".inf", "inf"))
        return float("nan") if low == ".nan" else float(text)
    return text


def _walk(node, path, lines, problems, source):
    import yaml

    lines[path] = node.start_mark.line + 1

    def problem(at, message):
        problems.append(
            f"{source}:{at.start_mark.line + 1}: {dotted(path) or 'top level'}: {message}"
        )

    if len(path) >= MAX_DEPTH:
        problem(node, f"nested more than {MAX_DEPTH} levels deep")
        return None

    if isinstance(node, yaml.SequenceNode) and len(path) + 1 < MAX_DEPTH:
        # A long list of plain scalars (addresses): its items read here, without a
        # call per item.
        out = []
        for i, item in enumerate(node.value):
            if type(item) is not yaml.ScalarNode or item.tag != _TEXT_TAG:
                out.append(_walk(item, path + (i,), lines, problems, source))
                continue
            lines[path + (i,)] = item.start_mark.line + 1
            value = item.value
            if _CONTROL.search(value):
                _walk(item, path + (i,), lines, problems, source)  # says why
            out.append(value)
        return out
    if isinstance(node, yaml.MappingNode):
        out = {}
        merges = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problem(key_node, "a key must be a string, not a list or a mapping")
                continue
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            try:
                key = _scalar(key_node)
            except ValueError:
                key = key_node.value
            if not isinstance(key, str):
                problem(key_node, f"key {shorten(key)} must be a string")
                continue
            if _CONTROL.search(key):
                problem(key_node, f"key {shorten(key)} holds a control character")
                continue
            if key in out:
                problems.append(
                    f"{source}:{key_node.start_mark.line + 1}: {dotted(path + (key,))}:"
                    f" duplicate key (first at line {lines[path + (key,)]})"
                )
                continue
            out[key] = _walk(value_node, path + (key,), lines, problems, source)
            lines[path + (key,)] = key_node.start_mark.line + 1
        # '<<: *defaults' (YAML merge keys): keys written in the mapping win, then
        # the merged mappings in order.
        for value_node in merges:
            items = (
                value_node.value
                if isinstance(value_node, yaml.SequenceNode)
                else [value_node]
            )
            for item in items:
                if not isinstance(item, yaml.MappingNode):
                    problem(item, "'<<' merges a mapping or a list of mappings")
                    continue
                merged_lines: dict[tuple, int] = {}
                merged = _walk(item, path, merged_lines, problems, source)
                for key, value in merged.items():
                    if key not in out:
                        out[key] = value
                        for p, line in merged_lines.items():
                            if p[: len(path) + 1] == path + (key,):
                                lines[p] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, path + (i,), lines, problems, source)
            for i, item in enumerate(node.value)
        ]
    try:
        value = _scalar(node)
    except ValueError:
        problem(node, f"cannot read the value {shorten(node.value)}")
        return None
    if isinstance(value, str) and _CONTROL.search(value):
        problem(node, f"{shorten(value)} holds a control character (a line break?)")
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_TEXT_TAG = TAG + "str"


def dotted(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    if len(out) > 120:  # a deep or long path, as a hostile input makes
        out = f"{out[:50]}...{out[-50:]}"
    return out


def line_of(lines, path) -> int:
    """The line of path, or of its nearest ancestor with one; 0 if none has."""
    path = tuple(path)
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 0)


def where(source, lines, path) -> str:
    line = line_of(lines, path)
    return f"{source}:{line}" if line else source


def type_name(value) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
