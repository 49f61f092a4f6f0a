"""HCL layout both Terraform emitters share."""

from __future__ import annotations


def aligned(pairs: list[tuple[str, str]]) -> list[str]:
    """`key = value` lines with the equals signs lined up, as terraform fmt does."""
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{key.ljust(width)} = {value}" for key, value in pairs]
