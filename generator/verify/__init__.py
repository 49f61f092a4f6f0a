"""verify: load the generated iptables rules into a test bed of network namespaces
and send real packets, to prove the flows that must connect do and the rest do not.

The test bed: one namespace per host, each joined by a veth pair to a bridge that lives
in a namespace of its own (never the host's). Every host has one /32 address and an
on-link default route, so every address is reachable on the one segment whatever
subnet it belongs to. Role hosts (two per compute role, so that Nomad-to-Nomad and
VM-to-VM can be tried) get an address from the role's subnet and load their role's
rules with the generated apply.sh, as an operator would. Peer hosts (external, VCS,
DNS, admin, ...) get an address from the peer's own CIDRs and no firewall. A peer of
0.0.0.0/0 needs a stand-in: 198.18.0.10 (198.18.0.0/15 is the benchmarking range,
never routed), or the .10 of the next /24 there if the profile uses it, so that
only an "anywhere" rule can let it through. One agent per namespace
(generator.netprobe) serves the host's ports and runs its probes in parallel; a
probe gives up after 0.3 s, and a surprise is tried once more at 1 s.

With the profile, the bed is shaped like real hosts (probes.host_firewall):
containers behind a bridge with MASQUERADE and DNAT, IPv6 addresses on every host,
the host essentials' servers, an operator's DROP after rulegen's jump, and the
rollback guard proved with a ruleset that cuts the admin's SSH; and the hops of the
profile's packet paths (hops.py): a NAT gateway, public addresses, a balancer host,
a pod with its own range.

What is probed (every expectation is explain's answer, through the profile's paths;
where a page property asks for the probe, the rules must agree with it):
- must connect: every rule of the matrix, from a host inside its peer (the low,
  middle and high port of a range; protocol all: a TCP and a UDP probe on a port no
  rule names); UDP must get an answer;
- must fail: between two hosts of an isolated role (Nomad clients, external VMs) on
  every port they serve that no acknowledged site flow opens; a port no rule names between every pair of roles not joined
  by an all-protocol rule; the external host, and every source of a site flow, to
  every port a role serves that no ingress rule publishes to it;
- along the paths: from a source role's host to the address the application reaches
  the destination on (a VM's public IP, the balancer's), through the hops.

The package, bottom layer first (a module imports only from those listed before it,
never from this file, which re-exports the public names):
- model: hosts, probes, the plan (drawn and being drawn), a run's outcome, VerifyError;
- signals: signals held during steps that must finish, or turned into KeyboardInterrupt;
- probes: the probes per property, with their expectations (explain's);
- hops: the hops of the packet paths, and the probes through them;
- plan: where the hosts stand, the properties in order, the probes' order (make_plan);
- bed: the namespaces, links, addresses, containers and agents (NamespaceBed);
- engines: the iptables or nftables files a run loads, and the tools they need;
- runner: one run (run), the rollback proof, observing with a retry;
- leftovers: `verify --cleanup`;
- summary: the report.
"""

from .model import Draft, Host, Outcome, Probe, ProbePlan, VerifyError
from .signals import CAUGHT, Interrupted, signals_raise
from .probes import (
    CONTAINER_POOL,
    ISOLATED,
    PUBLISHED_FLOWS,
    endpoint,
    expected,
    sample_ports,
)
from .plan import (
    HOSTS_PER_ROLE,
    STAND_IN6,
    STAND_IN_RANGE,
    UNLISTED_CANDIDATES,
    make_plan,
    stand_in,
    unlisted_port,
)
from .bed import (
    BED_NAME,
    COMMAND_TIMEOUT,
    READY_TIMEOUT,
    RUN_DIR,
    TIMEOUT,
    TMP_PREFIX,
    NamespaceBed,
)
from .engines import ENGINES, preflight, ruleset, write_files
from .runner import (
    GUARD_SECONDS,
    RETRY_TIMEOUT,
    client_ports,
    find_rules,
    observe_with_retry,
    rollback,
    run,
)
from .leftovers import cleanup
from .summary import report

__all__ = [
    "BED_NAME",
    "CAUGHT",
    "COMMAND_TIMEOUT",
    "CONTAINER_POOL",
    "Draft",
    "ENGINES",
    "GUARD_SECONDS",
    "HOSTS_PER_ROLE",
    "Host",
    "ISOLATED",
    "Interrupted",
    "NamespaceBed",
    "Outcome",
    "PUBLISHED_FLOWS",
    "Probe",
    "ProbePlan",
    "READY_TIMEOUT",
    "RETRY_TIMEOUT",
    "RUN_DIR",
    "STAND_IN6",
    "STAND_IN_RANGE",
    "TIMEOUT",
    "TMP_PREFIX",
    "UNLISTED_CANDIDATES",
    "VerifyError",
    "endpoint",
    "expected",
    "cleanup",
    "client_ports",
    "find_rules",
    "make_plan",
    "observe_with_retry",
    "preflight",
    "report",
    "rollback",
    "ruleset",
    "run",
    "sample_ports",
    "signals_raise",
    "stand_in",
    "unlisted_port",
    "write_files",
]
