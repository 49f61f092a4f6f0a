"""Derive a small, strict JSON Schema for a Compute API `Firewall` insert body.

Reads the Compute v1 discovery document, from the google-api-python-client wheel or
the JSON itself, and writes tests/data/gcp-firewall.schema.json (or OUT):

    pip download --no-deps -d /tmp/gapi google-api-python-client
    python scripts/derive_gcp_schema.py /tmp/gapi/google_api_python_client-*.whl

Output-only fields are left out and unknown keys are refused. Constraints that the
document states only in prose (priority range, port syntax, field combinations) are
read from that prose where possible and fail loudly if the prose changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path

MEMBER = "googleapiclient/discovery_cache/documents/compute.v1.json"
DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "data"
    / "gcp-firewall.schema.json"
)


def read_document(path: Path) -> tuple[dict, str]:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            return json.loads(wheel.read(MEMBER)), path.name
    return json.loads(path.read_text()), path.name


def output_only(prop: dict) -> bool:
    text = prop.get("description", "")
    return prop.get("readOnly", False) or text.startswith(
        ("[Output Only]", "Output only.")
    )


def convert(prop: dict, schemas: dict, defs: dict) -> dict:
    """One discovery property as JSON Schema; nested objects refuse unknown keys."""
    if "$ref" in prop:
        name = prop["$ref"]
        if name not in defs:
            defs[name] = {}  # placeholder against cycles
            defs[name] = convert_object(schemas[name], schemas, defs)
        return {"$ref": f"#/$defs/{name}"}
    kind = prop.get("type")
    out: dict = {}
    if kind == "object" and "properties" in prop:
        return convert_object(prop, schemas, defs)
    if kind == "object" and "additionalProperties" in prop:
        out = {
            "type": "object",
            "additionalProperties": convert(
                prop["additionalProperties"], schemas, defs
            ),
        }
    elif kind == "array":
        out = {"type": "array", "items": convert(prop["items"], schemas, defs)}
    elif kind == "string" and prop.get("format") in ("int64", "uint64"):
        out = {"type": "string", "pattern": "^[0-9]+$"}
    elif kind:
        out = {"type": kind}
    if "enum" in prop:
        out["enum"] = list(prop["enum"])
    if "pattern" in prop:
        out["pattern"] = f"^(?:{prop['pattern']})$"  # discovery patterns are unanchored
    return out


def convert_object(schema: dict, schemas: dict, defs: dict) -> dict:
    props = {
        key: convert(prop, schemas, defs)
        for key, prop in sorted(schema.get("properties", {}).items())
        if not output_only(prop)
    }
    return {"type": "object", "additionalProperties": False, "properties": props}


def prose(pattern: str, text: str, what: str) -> re.Match:
    found = re.search(pattern, text, re.S)
    if not found:
        sys.exit(f"the discovery document no longer says {what}; update this script")
    return found


def derive(document: dict, source: str) -> dict:
    schemas = document["schemas"]
    firewall = schemas["Firewall"]
    defs: dict = {}
    schema = convert_object(firewall, schemas, defs)
    props = schema["properties"]
    fields = firewall["properties"]

    # "an integer between `0` and `65535`, both inclusive"
    found = prose(
        r"between `(\d+)` and `(\d+)`", fields["priority"]["description"], "priority"
    )
    props["priority"].update(minimum=int(found[1]), maximum=int(found[2]))

    # "(tcp, udp,icmp, esp, ah, ipip,sctp) or the IP protocol number"; "all" is
    # the documented protocol of a rule that matches every protocol.
    rule = firewall["properties"]["allowed"]["items"]["properties"]
    found = prose(
        r"protocol strings \(([^)]*)\) or the IP protocol number",
        rule["IPProtocol"]["description"],
        "which protocols a rule takes",
    )
    names = sorted({n.strip() for n in found[1].split(",")} | {"all"})
    # "Each entry must be either an integer or a range."
    prose(r"either an integer or a range", rule["ports"]["description"], "port syntax")
    entry = {
        "type": "object",
        "additionalProperties": False,
        "required": ["IPProtocol"],
        "properties": {
            "IPProtocol": {
                "type": "string",
                "pattern": "^(?:" + "|".join(names) + "|[0-9]{1,3})$",
            },
            "ports": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": "^[0-9]{1,5}(?:-[0-9]{1,5})?$"},
            },
        },
    }
    for key in ("allowed", "denied"):
        props[key] = {"type": "array", "minItems": 1, "items": entry}

    required = [
        key
        for key, prop in fields.items()
        if "compute.firewalls.insert" in prop.get("annotations", {}).get("required", [])
    ]
    prose(
        r"you cannot\s+specify the sourceTags",
        fields["direction"]["description"],
        "that egress rules take no source tags",
    )
    prose(
        r"sourceServiceAccounts cannot be used at the same time as\s*sourceTags or targetTags",
        fields["sourceServiceAccounts"]["description"],
        "that source service accounts exclude tags",
    )
    prose(
        r"targetServiceAccounts cannot be used at the same time as\s*targetTags or sourceTags",
        fields["targetServiceAccounts"]["description"],
        "that target service accounts exclude tags",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"Generated by scripts/derive_gcp_schema.py from {source}: Compute"
            f" {document['version']} discovery revision {document['revision']}."
            " Do not edit by hand."
        ),
        "title": "Compute API Firewall insert body",
        **schema,
        "required": sorted(required),
        # A rule allows or denies, never both.
        "oneOf": [{"required": ["allowed"]}, {"required": ["denied"]}],
        "allOf": [
            {
                "if": {
                    "required": ["direction"],
                    "properties": {"direction": {"const": "EGRESS"}},
                },
                "then": {
                    "not": {
                        "anyOf": [
                            {"required": ["sourceTags"]},
                            {"required": ["sourceServiceAccounts"]},
                        ]
                    }
                },
            },
            {
                "if": {"required": ["sourceServiceAccounts"]},
                "then": {
                    "not": {
                        "anyOf": [
                            {"required": ["sourceTags"]},
                            {"required": ["targetTags"]},
                        ]
                    }
                },
            },
            {
                "if": {"required": ["targetServiceAccounts"]},
                "then": {
                    "not": {
                        "anyOf": [
                            {"required": ["targetTags"]},
                            {"required": ["sourceTags"]},
                        ]
                    }
                },
            },
        ],
        "$defs": dict(sorted(defs.items())),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the wheel or compute.v1.json")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        document, source = read_document(args.source)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        sys.exit(f"{args.source}: cannot read the discovery document: {exc}")
    schema = derive(document, source)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(schema, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
