"""The one path from a profile to files: plan, optimize, fit the quotas, emit.

Every command that shows or writes what `generate` ships goes through here, so
`generate`, `snapshot`, `verify` and `explain` can never disagree.
"""

from __future__ import annotations

from .matrix import Matrix


def shipped_matrix(profile, optimized: bool = True) -> Matrix:
    from .optimizer import optimize
    from .planner import plan

    matrix = plan(profile)
    return optimize(matrix)[0] if optimized else matrix


def files_for(profile, matrix: Matrix, targets) -> dict[str, str]:
    """Every file of `targets`; raises EmitError (QuotaError included) before any."""
    from .emitters import emit

    if any("aws" in t.clouds for t in targets):  # GCP and host firewalls always fit
        from .emitters.aws import aws_options, check_acl_fit, check_fit
        from .quotas import quotas_for

        check_fit(matrix, targets, quotas_for(profile), aws_options(profile))
        check_acl_fit(profile, matrix, targets)
    return emit(matrix, profile, targets)
