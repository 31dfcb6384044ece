"""The unit of work of every governance change: one transaction that applies the change,
appends its record to the log and announces it to the cluster, then bumps the policy
epoch so every gateway process on this machine applies it on its very next call.

The concern services (catalog, scenarios, merchants, agreements, clients) and the
workflows, objections, measures, ratings and products all change state through
:meth:`UnitOfWork.change`, so each change is a record and no change is left unannounced.
This module imports no service, so any of them may import it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.clock import Clock
from gateway.cluster.announce import announce_policy_change
from gateway.db.schema import Base
from gateway.errors import ConflictError
from gateway.governance.actor import Actor
from gateway.governance.epoch import EpochFile
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import PendingRecord, append_in_transaction

__all__ = ["Apply", "Unchanged", "UnitOfWork", "fetch_row"]

T = TypeVar("T")

# What a change does inside its transaction: given the connection and the change's time.
Apply = Callable[[AsyncConnection, dt.datetime], Awaitable[T]]

# How often a change is run again when a concurrent append took its log position.
_ATTEMPTS = 5


class Unchanged(Exception):
    """Raised by a change's ``apply`` when, seen inside its transaction, there is nothing to
    change after all (a retried request, a deadline another process already recorded): the
    transaction rolls back, no record is appended, and :meth:`UnitOfWork.change` returns
    ``value``."""

    def __init__(self, value: Any = None) -> None:
        super().__init__("unchanged")
        self.value = value


async def fetch_row(conn: AsyncConnection, model: type[Base], condition: Any) -> Any:
    """The one row of ``model``'s table matching ``condition`` as a named tuple, or None."""
    table = model.__table__
    return (await conn.execute(select(table).where(condition))).first()


class UnitOfWork:
    """Runs changes as records: the one place a governance transaction is opened."""

    def __init__(
        self,
        engine: AsyncEngine,
        epoch: EpochFile,
        clock: Clock,
        *,
        algorithm: HashAlgorithm = "sha256",
    ) -> None:
        self._engine = engine
        self._epoch = epoch
        self._clock = clock
        self._algorithm: HashAlgorithm = algorithm

    async def change(
        self,
        actor: Actor,
        kind: str,
        body: Mapping[str, Any],
        apply: Apply[T],
        *,
        stream: str = "governance",
    ) -> T:
        """Run ``apply`` and append its record to ``stream`` in one transaction; on a
        concurrent append, run both again. Every state change of the authorization
        workflows (and, in the ``products`` stream, of data products and trades) goes
        through here, so each one is a record.

        Raises :class:`ConflictError` when concurrent changes kept taking the log position,
        and whatever ``apply`` raises (the transaction then rolls back)."""
        for _attempt in range(_ATTEMPTS):
            now = self._clock.now()
            try:
                async with self._engine.begin() as conn:
                    result = await apply(conn, now)
                    await append_in_transaction(
                        conn,
                        PendingRecord(
                            stream=stream,
                            kind=kind,
                            recorded_at=now,
                            body={"actor": actor.to_dict(), **body},
                        ),
                        self._algorithm,
                    )
                    await announce_policy_change(conn)
            except IntegrityError:
                # A concurrent append took our log position (or a row appeared since we
                # checked): run the whole change again on the new state.
                continue
            except Unchanged as nothing:
                return cast(T, nothing.value)  # rolled back: no record, nothing to announce
            self._epoch.bump()
            return result
        raise ConflictError(f"{kind}: concurrent changes kept conflicting; try again")
