"""One verify run: the plan drawn, the engine's rules written and loaded into a fresh bed,
every probe observed (a surprise tried once more, slowly), the rollback guard proved,
and the bed and its files removed whatever happens. Also the run's inputs: the rules
a run drops by name, and the client ports a stateless ruleset lets replies reach.
"""

from __future__ import annotations

import selectors
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..matrix import Matrix, Rule
from .bed import COMMAND_TIMEOUT, TIMEOUT, TMP_PREFIX, NamespaceBed
from .engines import preflight, ruleset, write_files
from .model import Outcome, Probe, ProbePlan, VerifyError
from .plan import make_plan
from .signals import Interrupted, _deferred_signals, signals_raise

RETRY_TIMEOUT = 1.0  # a surprise is tried once more, slowly, before it is reported


def client_ports(matrix: Matrix) -> tuple[tuple[int, int] | None, str]:
    """Stateless rulesets let replies reach the ephemeral range: use it, minus listed ports."""
    if matrix.stateful:
        return None, ""
    ephemeral = next((r.ports for r in matrix.rules if r.is_return), None)
    listed = sorted(
        {r.ports for r in matrix.rules if r.ports and not r.is_return}
        | {r.source_ports for r in matrix.rules if r.source_ports}
    )
    reserved = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in listed)
    return ephemeral, reserved


def find_rules(matrix: Matrix, names) -> list[Rule]:
    import difflib

    by_name = {r.name: r for r in matrix.rules}
    found = []
    for name in names:
        if name not in by_name:
            guess = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(guess)}?" if guess else ""
            raise VerifyError(f"no rule named {name!r} in the matrix{hint}")
        found.append(by_name[name])
    return found


def observe_with_retry(
    bed: NamespaceBed, probes: list[Probe], matrix: Matrix, retry: float = RETRY_TIMEOUT
) -> dict:
    """Observe; a surprise is tried once more with a longer timeout before it counts."""
    ports, reserved = client_ports(matrix)
    observed = bed.observe(probes, TIMEOUT, ports, reserved)
    surprises = [p for p in probes if (observed.get(p.id) == "connected") != p.expect]
    if surprises:
        observed.update(bed.observe(surprises, retry, ports, reserved))
    return observed


GUARD_SECONDS = 2  # apply.sh --timeout in the rollback proof


def bystander(plan: ProbePlan, host, admin: Probe) -> Probe | None:
    """A flow the previous rules let reach `host` (not the admin's SSH): an operator
    drops it in INPUT while the bad ruleset awaits confirmation, and the rollback,
    which restores only rulegen's part, must leave that DROP in place. Not a port
    published to a container: that one takes the forward path."""
    published = [
        ports
        for box in plan.hosts
        if box.parent is not None and box.parent.key == host.key
        for ports in box.published
    ]
    flow = next(
        (
            p
            for p in plan.probes
            if p.kind == "matrix"
            and p.expect
            and p.protocol == "tcp"
            and p.dst.key == host.key
            and (p.src.key, p.port) != (admin.src.key, admin.port)
            and (p.src.address, p.port) not in host.drops
            and not any(lo <= p.port <= hi for lo, hi in published)
        ),
        None,
    )
    if flow is None:
        return None
    why = "a rule the operator adds to INPUT while a load awaits confirmation"
    return Probe(
        flow.src,
        host,
        "tcp",
        flow.port,
        False,
        [f"{why} stays after the rollback"],
        "rollback",
        "others-kept",
    )


def rollback(
    bed: NamespaceBed,
    plan: ProbePlan,
    matrix,
    profile,
    folder: Path,
    change=None,
    engine: str = "iptables",
):
    """The rollback guard, proved: a ruleset without admin SSH, loaded through
    apply.sh's guard by a session that is then cut, gives way to the previous
    rules by itself, and only to rulegen's: a DROP the operator adds meanwhile stays.
    Returns the probes (cut, restored, others-kept) and what was observed.
    `change` edits the files first (the tests take the guard out to see this fail)."""
    admin = next(
        (
            p
            for p in plan.probes
            if p.kind == "matrix"
            and p.expect
            and (p.protocol, p.port) == ("tcp", 22)
            and p.dst.role
            and "ssh_admin" in p.src.labels
        ),
        None,
    )
    if admin is None:
        return [], {}
    host = admin.dst
    rule = next(
        r
        for r in matrix.for_role(host.role, "ingress")
        if r.peer.name == "ssh_admin" and not r.is_return
    )
    bad = folder / "rollback"
    bad.mkdir()
    files = ruleset(matrix, profile, [rule], engine)
    write_files(bad, change(files) if change else files)
    cut = Probe(
        admin.src,
        host,
        "tcp",
        22,
        False,
        [f"a bad ruleset (without {rule.name}) cuts the admin's SSH"],
        "rollback",
        "cut",
    )
    back = Probe(
        admin.src,
        host,
        "tcp",
        22,
        True,
        ["apply.sh's rollback guard brings the previous rules back"],
        "rollback",
        "restored",
    )
    proc = subprocess.Popen(
        bed.apply(host, "--timeout", str(GUARD_SECONDS)),
        cwd=bad,
        stdin=subprocess.PIPE,  # the admin's session: never answers
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stderr, selectors.EVENT_READ)
        if not sel.select(timeout=COMMAND_TIMEOUT) or "loaded" not in (
            proc.stderr.readline()
        ):
            raise VerifyError(f"apply.sh on {host.title} did not load the bad ruleset")
        observed = bed.observe([cut], TIMEOUT)
        kept = bystander(plan, host, admin)
        if kept is not None:
            bed.drop(host, kept.src.address, kept.port)
    finally:
        proc.kill()  # the session is cut: only the guard is left
        proc.wait(timeout=10)
        proc.stdin.close()
        proc.stderr.close()
    deadline = time.monotonic() + GUARD_SECONDS + 10
    while True:
        seen = bed.observe([back], TIMEOUT)
        if seen.get(back.id) == "connected" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    observed.update(seen)
    if kept is None:
        return [cut, back], observed
    ports, reserved = client_ports(matrix)
    observed.update(bed.observe([kept], TIMEOUT, ports, reserved))
    return [cut, back, kept], observed


def run(
    matrix: Matrix, profile, drop_names=(), engine: str = "iptables", progress=None
) -> Outcome:
    """Build the bed, load the (possibly thinned) rules, probe, and clean up.

    `progress(line)`, if given, hears of each phase as it starts."""
    started = time.monotonic()

    def phase(text: str) -> None:
        if progress:
            progress(f"verify: {text} ({time.monotonic() - started:.1f} s)")

    dropped = find_rules(matrix, drop_names)
    plan = make_plan(matrix, profile.subnets, profile)
    files = ruleset(matrix, profile, dropped, engine)
    preflight(any(rel.endswith(".ipset") for rel in files), engine)
    bed = NamespaceBed(plan.hosts)
    root = None
    phase(f"planned {len(plan.probes)} probes on {len(plan.hosts)} hosts")
    try:
        with signals_raise():
            bed._claim()  # before the first file: --cleanup tells a live run by it
            # Named by the bed's prefix, so --cleanup can find it after a SIGKILL.
            with _deferred_signals():
                root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{bed.prefix}-"))
            folder = root / "rules"
            folder.mkdir()
            write_files(folder, files)
            phase("building the test bed: network namespaces, bridge, listeners")
            with bed:
                phase(f"loading the {engine} rules of every role")
                bed.load(folder)
                phase(f"sending {len(plan.probes)} probes")
                observed = observe_with_retry(bed, plan.probes, matrix)
                if not dropped:
                    phase("proving apply.sh's rollback guard")
                    extra, seen = rollback(
                        bed, plan, matrix, profile, root, engine=engine
                    )
                    plan.probes.extend(extra)
                    observed.update(seen)
                phase("removing the test bed")
    except KeyboardInterrupt:
        raise Interrupted(bed.started, sorted(bed._left_behind())) from None
    finally:
        with _deferred_signals():  # a signal now waits until all is gone
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
            bed.release()
    outcome = Outcome(matrix, plan, observed, time.monotonic() - started, dropped)
    outcome.engine = engine
    return outcome
