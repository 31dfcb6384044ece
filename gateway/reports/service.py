"""Making a report from a running :class:`~gateway.runtime.Gateway`: the one entry point
the CLI and the HTTP API share, so both make the same report from the same facts."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from gateway.authorization.roles import Action
from gateway.chain.audit import chain_reader
from gateway.chain.backends import ChainBackend
from gateway.chain.errors import ChainUnavailableError
from gateway.errors import ValidationError
from gateway.governance.actor import Actor
from gateway.reports.audit_section import AuditProgress, ChainAccess
from gateway.reports.header import ReportHeader, load_names, read_heads, sign_heads
from gateway.reports.operations import OperationsReport, gather_operations
from gateway.reports.periods import Period
from gateway.reports.security import SecurityReport, gather_security
from gateway.runtime import Gateway
from gateway.settings import Settings

__all__ = [
    "chain_for_command_line",
    "chain_for_server",
    "operations_report",
    "security_report",
]


def chain_for_command_line(settings: Settings, *, skip: bool) -> ChainAccess:
    """The chain as ``dsgw audit --chain`` reaches it: the configured node (attaching to
    the anvil node a running gateway started), unless skipped or not configured."""
    if skip:
        return ChainAccess(None, "skipped on request (--no-chain)", backend=settings.chain.kind)
    if settings.chain.kind == "none":
        return ChainAccess(None, "no chain is configured (chain = none)", backend="none")
    return ChainAccess(
        lambda: chain_reader(
            settings.chain.kind,
            state_dir=settings.data_dir / "chain",
            rpc_url=settings.chain.rpc_url,
        ),
        contract=settings.chain.contract,
        backend=settings.chain.kind,
    )


def chain_for_server(gateway: Gateway) -> ChainAccess:
    """The chain connection this gateway process already holds for anchoring, if any."""
    anchoring = gateway.anchoring
    if anchoring is None:
        return ChainAccess(None, "no chain is configured (chain = none)", backend="none")

    @contextlib.asynccontextmanager
    async def borrowed() -> AsyncIterator[ChainBackend]:
        if not anchoring.ready.is_set():
            raise ChainUnavailableError(
                f"chain: the gateway is not connected to {anchoring.backend.node} yet (see /readyz)"
            )
        yield anchoring.backend  # owned by the anchoring service: not closed here

    return ChainAccess(
        borrowed, contract=gateway.settings.chain.contract, backend=gateway.settings.chain.kind
    )


async def _header(gateway: Gateway, period: Period, generated_by: str) -> ReportHeader:
    now = gateway.clock.now()
    if period.start > now:
        raise ValidationError(f"period {period.label} has not begun yet")
    await sign_heads(gateway.checkpointer)
    return ReportHeader(
        deployment=gateway.settings.deployment,
        period=period,
        generated_at=now,
        generated_by=generated_by,
        heads=await read_heads(gateway.engine),
    )


def _who(actor: Actor) -> str:
    """Who a report names as its maker: a staff member with its role, the local
    administrator by its name."""
    return f"{actor.id} ({actor.role.value})" if actor.role else actor.id


async def security_report(
    gateway: Gateway,
    quarter: Period,
    *,
    actor: Actor,
    chain: ChainAccess,
    generated_by: str | None = None,
    progress: AuditProgress | None = None,
) -> SecurityReport:
    """The quarterly security report, made by ``actor`` (named ``generated_by``, by
    default who ``actor`` is). Signs a checkpoint of every stream that grew (the report's
    heads), then audits every stream; slow on a large log (the audit reads it all).
    Raises :class:`ForbiddenError` for a role without ``reports.read`` and
    :class:`ValidationError` for a quarter that has not begun."""
    actor.may(Action.READ_REPORTS)
    # Days of the deployment's zone, whoever parsed the period.
    quarter = replace(quarter, zone=gateway.settings.zone)
    header = await _header(gateway, quarter, generated_by or _who(actor))
    return await gather_security(
        gateway.engine,
        header,
        await load_names(gateway.engine),
        algorithm=gateway.settings.hash_algorithm,
        checkpoint_key=gateway.evidence.keys(),
        chain=chain,
        now=gateway.clock.now,
        progress=progress,
    )


async def operations_report(
    gateway: Gateway, period: Period, *, actor: Actor, generated_by: str | None = None
) -> OperationsReport:
    """The operations report of ``period``, made by ``actor`` (named ``generated_by``,
    by default who ``actor`` is). Raises :class:`ForbiddenError` for a role without
    ``reports.read`` and :class:`ValidationError` for a period that has not begun."""
    actor.may(Action.READ_REPORTS)
    period = replace(period, zone=gateway.settings.zone)
    header = await _header(gateway, period, generated_by or _who(actor))
    return await gather_operations(
        gateway.engine,
        header,
        await load_names(gateway.engine),
        # The gateway's calendar: shipped, configured and loaded schedules, in its zone.
        calendar=gateway.calendar.current,
        # Read as the report's maker (every role that reads reports reads revenue).
        revenue=lambda month: gateway.products.revenue(actor, month),
    )
