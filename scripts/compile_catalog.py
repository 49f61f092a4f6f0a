"""Write generator/catalog.json, the catalog as the command reads it, from catalog.yaml.

    python scripts/compile_catalog.py          # rewrite catalog.json
    python scripts/compile_catalog.py --check  # exit 1 if it does not match the YAML

catalog.yaml is the source, written and reviewed by people; reading it through
PyYAML costs 40 times what reading the same data as JSON does, on every command.
The JSON records the digest of the YAML it was made from: generator.catalog reads
it only while that digest matches catalog.yaml (else the YAML, as before), and
tests/test_catalog.py fails when regenerating would change a byte. Run this after
every edit of catalog.yaml (and after merging one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.catalog import CATALOG_JSON, CATALOG_PATH, read_yaml  # noqa: E402
from generator.catalog import yaml_digest  # noqa: E402


def source() -> str:
    text = CATALOG_PATH.read_bytes()
    data = read_yaml(text)
    if json.loads(json.dumps(data)) != data:
        raise SystemExit(f"{CATALOG_PATH} holds values JSON cannot carry as they are")
    document = {"generated_from": CATALOG_PATH.name, "yaml_sha256": yaml_digest(text)}
    document["catalog"] = data
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = source()
    if args.check:
        current = CATALOG_JSON.read_text() if CATALOG_JSON.exists() else ""
        if current != text:
            print(f"{CATALOG_JSON} is stale: run python scripts/compile_catalog.py")
            return 1
        return 0
    CATALOG_JSON.write_text(text)
    print(f"wrote {CATALOG_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
