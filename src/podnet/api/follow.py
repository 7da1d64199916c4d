"""The kernel follows the store at once: what api calls after a change that NetworkPolicies
depend on (a sandbox or pod made, relabelled or gone, a namespace relabelled, a policy
applied). The policy controller (podnet.policy.controller) is announced by the process
running the api (api.context.Served.policies); without one, nothing is enforced here.

Unlike Services, policies are synced in-process even when an agent runs: a sandbox must
never be reachable before the policies selecting it are in force, so `run` and CNI ADD wait
for them (the agent's own loop then finds nothing to change).
"""

from __future__ import annotations

from podnet.api.context import Context


def policies(ctx: Context, strict: bool = False, force: bool = False) -> None:
    """Make the policy table hold what the store wants now.

    strict: refuse (InvalidArgument) when a policy selects a sandbox podnet cannot police (a
    macvlan or host-network one); run, label and apply pass it, so nothing is left silently open.
    force: apply the table even when this host applied the same one last (reconcile: the kernel
    may have lost it).
    """
    sync = ctx.served.policies
    if sync is not None:
        sync.sync(ctx.store, strict=strict, force=force)


def bridges(ctx: Context) -> None:
    """Right after a bridge was made: its bridged traffic passes the policies' hooks
    (br_netfilter per bridge), when any policy exists. No table rebuild."""
    sync = ctx.served.policies
    if sync is not None:
        sync.pass_bridged(ctx.store)
