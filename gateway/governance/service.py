"""Admin actions of the authority and the operator: the catalog, scenarios, merchants,
agreements, client credentials and revocation.

Each change commits together with its record in the ``governance`` log stream, then bumps
the policy epoch so every gateway process applies it on its very next call.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.authorization.boundaries import Party, Reach, party_of, require_reach
from gateway.authorization.roles import Action, Role, require
from gateway.authorization.secrets import SecretHasher, new_client_secret
from gateway.catalog.models import Dataset, check_id
from gateway.catalog.sources import SourceAccess
from gateway.clock import DEFAULT_ZONE, Clock
from gateway.cluster.policy_push import announce_policy_change
from gateway.db.schema import (
    AgreementRow,
    Base,
    ClientRow,
    DatasetRow,
    MerchantRow,
    ScenarioRow,
    TokenRow,
)
from gateway.errors import (
    CatalogError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from gateway.governance.epoch import EpochFile
from gateway.governance.models import (
    Agreement,
    AgreementStatus,
    Client,
    DocumentRef,
    Evaluation,
    Merchant,
    MerchantStatus,
    Scenario,
    ScenarioStatus,
    parse_time_value,
)
from gateway.governance.policy import PolicySnapshot, load_snapshot
from gateway.identifiers import is_valid_uscc
from gateway.ledger.hashing import HashAlgorithm
from gateway.ledger.log import PendingRecord, append_in_transaction
from keys.jwk import jwk_to_public_key

__all__ = [
    "LOCAL_ADMIN",
    "Actor",
    "GovernanceService",
    "IssuedClient",
    "Unchanged",
    "insert_merchant",
    "new_merchant",
]

T = TypeVar("T")


class Unchanged(Exception):
    """Raised by a change's ``apply`` when, seen inside its transaction, there is nothing to
    change after all (a retried request, a deadline another process already recorded): the
    transaction rolls back, no record is appended, and :meth:`GovernanceService.change`
    returns ``value``."""

    def __init__(self, value: Any = None) -> None:
        super().__init__("unchanged")
        self.value = value


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change. ``role=None`` is the local administrator at the console, who
    holds the data directory and the keystore passphrase and so may do anything."""

    id: str
    role: Role | None = None
    # A source department's staff: the ``provider`` of the datasets it answers for.
    department: str | None = None
    # A merchant acting on its own surface (applications, tasks).
    merchant_id: str | None = None
    # The gateway itself, e.g. a deadline that passed: nobody decided.
    system: bool = False
    # Someone without credentials, e.g. a company applying to become a merchant.
    applicant: bool = False

    def may(self, action: Action) -> None:
        if self.role is not None:
            require(self.role, action)
        elif self.merchant_id is not None or self.system or self.applicant:
            raise ForbiddenError(f"{self.id} may not {action.value}")

    @property
    def is_local_admin(self) -> bool:
        return (
            self.role is None
            and self.merchant_id is None
            and not self.system
            and not self.applicant
        )

    def source_department(self) -> str | None:
        """The department a source department's client acts for; None for everyone else.
        Raises :class:`ForbiddenError` for a source client bound to no department."""
        if self.role is not Role.SOURCE:
            return None
        if not self.department:
            raise ForbiddenError(
                f"{self.id} is a source client bound to no department; the local "
                "administrator issues source clients with --department"
            )
        return self.department.strip()

    def sees_source_of(self, dataset: Dataset) -> bool:
        """Whether this actor may see where ``dataset``'s rows live: the authority, the
        local administrator and the department that provides it; no other staff role."""
        if self.role is Role.AUTHORITY or self.is_local_admin:
            return True
        return (
            self.role is Role.SOURCE
            and bool(self.department)
            and (self.department or "").strip() == dataset.provider.strip()
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "role": self.role.value if self.role else None}
        if self.merchant_id is not None:
            out["role"] = "merchant"
            out["merchant_id"] = self.merchant_id
        elif self.system:
            out["role"] = "system"
        elif self.applicant:
            out["role"] = "applicant"
        elif self.role is None:
            out["role"] = "local-admin"
        if self.department is not None:
            out["department"] = self.department
        return out


LOCAL_ADMIN = Actor("local-admin")


@dataclass(frozen=True, slots=True)
class IssuedClient:
    client: Client
    # Shown once; only its hash is stored.
    secret: str | None


async def _row(conn: AsyncConnection, model: type[Base], condition: Any) -> Any:
    """The one row matching ``condition`` as a named tuple, or None."""
    table = model.__table__
    return (await conn.execute(select(table).where(condition))).first()


def new_merchant(merchant_id: str, name: str, credit_code: str) -> Merchant:
    """A merchant with a checked id, name and unified social credit code (GB 32100)."""
    check_id("merchant", merchant_id)
    if not name.strip() or len(name) > 200:
        raise ValidationError("merchant name must be 1-200 characters")
    code = credit_code.strip().upper()
    if not is_valid_uscc(code):
        raise ValidationError(
            f"merchant credit code {credit_code!r} is not a valid unified social credit "
            "code (GB 32100: 18 characters with a correct check character)"
        )
    return Merchant(merchant_id, name.strip(), code)


async def insert_merchant(conn: AsyncConnection, merchant: Merchant, now: dt.datetime) -> None:
    """Store a new merchant; :class:`ConflictError` if its id or credit code is taken."""
    if await conn.scalar(select(MerchantRow.id).where(MerchantRow.id == merchant.id)):
        raise ConflictError(f"merchant {merchant.id} already exists")
    code = merchant.credit_code
    if await conn.scalar(select(MerchantRow.id).where(MerchantRow.credit_code == code)):
        raise ConflictError(f"a merchant with credit code {code} already exists")
    await conn.execute(
        insert(MerchantRow).values(
            id=merchant.id,
            name=merchant.name,
            credit_code=code,
            status=merchant.status.value,
            created_at=now,
            updated_at=now,
        )
    )


class GovernanceService:
    def __init__(
        self,
        engine: AsyncEngine,
        epoch: EpochFile,
        clock: Clock,
        hasher: SecretHasher,
        *,
        algorithm: HashAlgorithm = "sha256",
        sources: SourceAccess,
        zone: dt.tzinfo = DEFAULT_ZONE,
    ) -> None:
        """``zone`` is the deployment's time zone: date-only periods are its days."""
        self._engine = engine
        self._zone = zone
        self._epoch = epoch
        self._clock = clock
        self._hasher = hasher
        self._algorithm: HashAlgorithm = algorithm
        self._sources = sources

    @property
    def zone(self) -> dt.tzinfo:
        """The deployment's time zone (setting ``timezone``)."""
        return self._zone

    async def change(
        self,
        actor: Actor,
        kind: str,
        body: Mapping[str, Any],
        apply: Callable[[AsyncConnection, dt.datetime], Awaitable[T]],
        *,
        stream: str = "governance",
    ) -> T:
        """Run ``apply`` and append its record to ``stream`` in one transaction; on a
        concurrent append, run both again. Every state change of the authorization
        workflows (and, in the ``products`` stream, of data products and trades) goes
        through here, so each one is a record."""
        for _attempt in range(5):
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

    # -- catalog ------------------------------------------------------------------------

    async def register_dataset(
        self, actor: Actor, data: Mapping[str, Any], *, replace_existing: bool = False
    ) -> Dataset:
        """Add (or with ``replace_existing`` replace) a catalog entry.

        A source department registers only under its own provider name, and replaces only
        its own entries; the authority and the local administrator may register for any
        provider. Whoever registers, the source must lie where the local administrator
        allows (:mod:`gateway.catalog.sources`) and name its password by a secret
        reference it may use. The governance record carries the source as a digest.
        """
        actor.may(Action.REGISTER_DATASET)
        dataset = Dataset.from_dict(data)
        department = actor.source_department()
        if department is not None and dataset.provider.strip() != department:
            raise ForbiddenError(
                f"a client of {department} registers datasets only under its own provider "
                f"name ({department}); the data authority registers for other providers",
                member="provider",
            )
        await self._sources.check_registration(dataset, department=department)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Dataset:
            current_provider = await conn.scalar(
                select(DatasetRow.provider).where(DatasetRow.id == dataset.id)
            )
            if current_provider is not None and not replace_existing:
                raise ConflictError(f"dataset {dataset.id} is already registered")
            if current_provider is not None and department not in (
                None,
                current_provider.strip(),
            ):
                raise ForbiddenError(
                    f"dataset {dataset.id} is provided by another department; a department "
                    "replaces only its own datasets"
                )
            values = {
                "name": dataset.name,
                "provider": dataset.provider,
                "open_attribute": dataset.open_attribute.value,
                "negative_list": dataset.negative_list,
                "definition": dataset.to_dict(),
                "updated_at": now,
            }
            if current_provider is not None:
                await conn.execute(
                    update(DatasetRow).where(DatasetRow.id == dataset.id).values(**values)
                )
            else:
                await conn.execute(
                    insert(DatasetRow).values(id=dataset.id, created_at=now, **values)
                )
            return dataset

        kind = "dataset.updated" if replace_existing else "dataset.registered"
        return await self.change(actor, kind, {"dataset": dataset.record_dict()}, apply)

    # -- scenarios ----------------------------------------------------------------------

    async def create_scenario(self, actor: Actor, data: Mapping[str, Any]) -> Scenario:
        actor.may(Action.MANAGE_SCENARIO)
        scenario = replace(Scenario.from_dict(data, self._zone), status=ScenarioStatus.DRAFT)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            if await conn.scalar(select(ScenarioRow.id).where(ScenarioRow.id == scenario.id)):
                raise ConflictError(f"scenario {scenario.id} already exists")
            await self._check_grants(conn, scenario)
            await conn.execute(
                insert(ScenarioRow).values(
                    id=scenario.id,
                    name=scenario.name,
                    status=scenario.status.value,
                    definition=scenario.to_dict(),
                    created_at=now,
                    updated_at=now,
                )
            )
            return scenario

        return await self.change(actor, "scenario.created", {"scenario": scenario.to_dict()}, apply)

    async def _check_grants(self, conn: AsyncConnection, scenario: Scenario) -> None:
        for grant in scenario.grants:
            row = await _row(conn, DatasetRow, DatasetRow.id == grant.dataset_id)
            if row is None:
                raise NotFoundError(
                    f"scenario {scenario.id}: dataset {grant.dataset_id} is not in the catalog"
                )
            grant.check_against(Dataset.from_dict(row.definition))

    async def set_scenario_status(
        self, actor: Actor, scenario_id: str, status: ScenarioStatus, reason: str = ""
    ) -> Scenario:
        actor.may(
            Action.SUSPEND_SCENARIO
            if status is ScenarioStatus.SUSPENDED
            else Action.MANAGE_SCENARIO
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            row = await _row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
            if row is None:
                raise NotFoundError(f"scenario {scenario_id} does not exist")
            current = replace(Scenario.from_dict(row.definition), status=ScenarioStatus(row.status))
            current.check_transition(status)
            if status is ScenarioStatus.PUBLISHED:
                current.check_publishable()
                # Catalog rules may have changed since the draft was written.
                await self._check_grants(conn, current)
            updated = replace(current, status=status)
            await conn.execute(
                update(ScenarioRow)
                .where(ScenarioRow.id == scenario_id)
                .values(status=status.value, definition=updated.to_dict(), updated_at=now)
            )
            return updated

        return await self.change(
            actor,
            f"scenario.{status.value}",
            {"scenario_id": scenario_id, "status": status.value, "reason": reason},
            apply,
        )

    async def record_scenario_plan(
        self, actor: Actor, scenario_id: str, plan: Mapping[str, Any]
    ) -> Scenario:
        """Attach the scenario's plan (title, reference, SHA-256 of the document)."""
        document = DocumentRef.from_dict("plan", plan)
        return await self._amend_draft(
            actor,
            scenario_id,
            "scenario.plan",
            {"plan": document.to_dict()},
            lambda current: replace(current, plan=document),
        )

    async def record_scenario_evaluation(
        self, actor: Actor, scenario_id: str, evaluation: Mapping[str, Any]
    ) -> Scenario:
        """Record the scenario's evaluation; only a passing one allows publication."""
        record = Evaluation.from_dict(evaluation)
        return await self._amend_draft(
            actor,
            scenario_id,
            "scenario.evaluation",
            {"evaluation": record.to_dict()},
            lambda current: replace(current, evaluation=record),
        )

    async def _amend_draft(
        self,
        actor: Actor,
        scenario_id: str,
        kind: str,
        body: Mapping[str, Any],
        amend: Callable[[Scenario], Scenario],
    ) -> Scenario:
        actor.may(Action.MANAGE_SCENARIO)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Scenario:
            row = await _row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
            if row is None:
                raise NotFoundError(f"scenario {scenario_id} does not exist")
            current = replace(Scenario.from_dict(row.definition), status=ScenarioStatus(row.status))
            if current.status is not ScenarioStatus.DRAFT:
                raise ConflictError(
                    f"scenario {scenario_id} is {current.status.value}: its plan and evaluation "
                    "are fixed once published (one scenario, one plan, one evaluation)"
                )
            updated = amend(current)
            await conn.execute(
                update(ScenarioRow)
                .where(ScenarioRow.id == scenario_id)
                .values(definition=updated.to_dict(), updated_at=now)
            )
            return updated

        return await self.change(actor, kind, {"scenario_id": scenario_id, **body}, apply)

    # -- merchants ----------------------------------------------------------------------

    async def register_merchant(
        self, actor: Actor, merchant_id: str, name: str, credit_code: str
    ) -> Merchant:
        actor.may(Action.REGISTER_MERCHANT)
        merchant = new_merchant(merchant_id, name, credit_code)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Merchant:
            await insert_merchant(conn, merchant, now)
            return merchant

        return await self.change(
            actor,
            "merchant.registered",
            {
                "merchant_id": merchant_id,
                "name": merchant.name,
                "credit_code": merchant.credit_code,
            },
            apply,
        )

    async def set_merchant_status(
        self, actor: Actor, merchant_id: str, status: MerchantStatus, reason: str = ""
    ) -> Merchant:
        actor.may(
            Action.SUSPEND_MERCHANT
            if status is MerchantStatus.SUSPENDED
            else Action.REGISTER_MERCHANT
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Merchant:
            row = await _row(conn, MerchantRow, MerchantRow.id == merchant_id)
            if row is None:
                raise NotFoundError(f"merchant {merchant_id} does not exist")
            await conn.execute(
                update(MerchantRow)
                .where(MerchantRow.id == merchant_id)
                .values(status=status.value, updated_at=now)
            )
            return Merchant(row.id, row.name, row.credit_code, status)

        return await self.change(
            actor,
            f"merchant.{status.value}",
            {"merchant_id": merchant_id, "status": status.value, "reason": reason},
            apply,
        )

    # -- agreements ---------------------------------------------------------------------

    async def grant_agreement(
        self,
        actor: Actor,
        *,
        merchant_id: str,
        scenario_id: str,
        starts_at: object,
        ends_at: object,
        shares: tuple[object, object, object],
        terms: Mapping[str, Any] | None = None,
        agreement_id: str | None = None,
    ) -> Agreement:
        actor.may(Action.GRANT_AGREEMENT)
        start = parse_time_value("starts_at", starts_at, self._zone)
        end = parse_time_value("ends_at", ends_at, self._zone)
        owner, operator, processor = Agreement.check_terms(start, end, shares)
        new_id = check_id("agreement", agreement_id or f"agr-{secrets.token_hex(6)}")
        agreement = Agreement(
            new_id, merchant_id, scenario_id, start, end, owner, operator, processor
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> Agreement:
            await self.insert_agreement(conn, now, agreement, dict(terms or {}))
            return agreement

        return await self.change(
            actor,
            "agreement.granted",
            {
                "agreement_id": new_id,
                "merchant_id": merchant_id,
                "scenario_id": scenario_id,
                "starts_at": start,
                "ends_at": end,
                "shares": {"owner": owner, "operator": operator, "processor": processor},
            },
            apply,
        )

    async def insert_agreement(
        self,
        conn: AsyncConnection,
        now: dt.datetime,
        agreement: Agreement,
        terms: Mapping[str, Any],
    ) -> None:
        """Store a checked agreement: an active merchant, a published scenario whose
        datasets can still be granted, an unused id."""
        merchant_id, scenario_id = agreement.merchant_id, agreement.scenario_id
        merchant = await _row(conn, MerchantRow, MerchantRow.id == merchant_id)
        if merchant is None:
            raise NotFoundError(f"merchant {merchant_id} does not exist")
        if merchant.status != MerchantStatus.ACTIVE.value:
            raise ConflictError(f"merchant {merchant_id} is {merchant.status}")
        row = await _row(conn, ScenarioRow, ScenarioRow.id == scenario_id)
        if row is None:
            raise NotFoundError(f"scenario {scenario_id} does not exist")
        if row.status != ScenarioStatus.PUBLISHED.value:
            raise ConflictError(
                f"scenario {scenario_id} is {row.status}; only a published scenario can be "
                "granted (no scenario, no authorization)"
            )
        scenario = Scenario.from_dict(row.definition)
        try:
            await self._check_grants(conn, scenario)
        except CatalogError as exc:
            raise CatalogError(f"agreement refused: {exc.detail}", **exc.extensions) from exc
        if await conn.scalar(select(AgreementRow.id).where(AgreementRow.id == agreement.id)):
            raise ConflictError(f"agreement {agreement.id} already exists")
        await conn.execute(
            insert(AgreementRow).values(
                id=agreement.id,
                merchant_id=merchant_id,
                scenario_id=scenario_id,
                starts_at=agreement.starts_at,
                ends_at=agreement.ends_at,
                share_owner=agreement.share_owner,
                share_operator=agreement.share_operator,
                share_processor=agreement.share_processor,
                status=agreement.status.value,
                terms=dict(terms),
                created_at=now,
                updated_at=now,
            )
        )

    async def set_agreement_status(
        self, actor: Actor, agreement_id: str, status: AgreementStatus, reason: str = ""
    ) -> AgreementStatus:
        actor.may(Action.MANAGE_AGREEMENT)

        async def apply(conn: AsyncConnection, now: dt.datetime) -> AgreementStatus:
            row = await _row(conn, AgreementRow, AgreementRow.id == agreement_id)
            if row is None:
                raise NotFoundError(f"agreement {agreement_id} does not exist")
            snapshot_agreement = Agreement(
                row.id,
                row.merchant_id,
                row.scenario_id,
                row.starts_at,
                row.ends_at,
                row.share_owner,
                row.share_operator,
                row.share_processor,
                AgreementStatus(row.status),
            )
            snapshot_agreement.check_transition(status)
            await conn.execute(
                update(AgreementRow)
                .where(AgreementRow.id == agreement_id)
                .values(status=status.value, updated_at=now)
            )
            return status

        return await self.change(
            actor,
            f"agreement.{status.value}",
            {"agreement_id": agreement_id, "status": status.value, "reason": reason},
            apply,
        )

    # -- clients and tokens -------------------------------------------------------------

    async def issue_client(
        self,
        actor: Actor,
        *,
        merchant_id: str | None = None,
        role: Role | None = None,
        public_jwk: Mapping[str, Any] | None = None,
        with_secret: bool = True,
        department: str | None = None,
        buyer_code: str | None = None,
    ) -> IssuedClient:
        """New client credentials for a merchant, staff credentials for a role, or a
        buyer's credentials (``buyer_code``: its unified social credit code) for the
        product deliveries it bought.

        A client authenticates with the returned secret, with ``private_key_jwt`` signed by
        the key matching ``public_jwk``, or either if both are set.
        """
        if sum(x is not None for x in (merchant_id, role, buyer_code)) != 1:
            raise ValidationError(
                "a client belongs to exactly one of a merchant, a staff role or a buyer"
            )
        if buyer_code is not None:
            buyer_code = buyer_code.strip().upper()
            if not is_valid_uscc(buyer_code):
                raise ValidationError("a buyer is named by its unified social credit code")
        if role is not None and actor.role is not None:
            raise ValidationError("staff credentials are issued only by the local administrator")
        actor.may(Action.ISSUE_CLIENT)
        if public_jwk is not None:
            jwk_to_public_key(public_jwk)  # refuse a malformed key now, not at first use
        if not with_secret and public_jwk is None:
            raise ValidationError("a client needs a secret or a public key")
        if (role in (Role.SOURCE, Role.DISTRICT)) != bool(department and department.strip()):
            raise ValidationError(
                "a source department's client names its department (the datasets' provider), "
                "a district bureau's its district, and only such clients do"
            )
        department = department.strip() if department else None
        if department is not None and len(department) > 200:
            raise ValidationError("department may be at most 200 characters")
        client_id = f"{merchant_id or role or 'buyer'}-{secrets.token_hex(4)}"
        secret = new_client_secret() if with_secret else None
        secret_hash = await self._hasher.hash_async(secret) if secret else None
        kind = "merchant" if merchant_id else "buyer" if buyer_code else "staff"
        client = Client(
            client_id=client_id,
            kind=kind,
            merchant_id=merchant_id,
            role=role.value if role else None,
            secret_hash=secret_hash,
            public_jwk=dict(public_jwk) if public_jwk else None,
            department=department,
            buyer_code=buyer_code,
        )

        async def apply(conn: AsyncConnection, now: dt.datetime) -> IssuedClient:
            if merchant_id is not None:
                exists = await conn.scalar(
                    select(MerchantRow.id).where(MerchantRow.id == merchant_id)
                )
                if exists is None:
                    raise NotFoundError(f"merchant {merchant_id} does not exist")
            await conn.execute(
                insert(ClientRow).values(
                    client_id=client_id,
                    kind=kind,
                    merchant_id=merchant_id,
                    role=client.role,
                    department=department,
                    buyer_code=buyer_code,
                    secret_hash=secret_hash,
                    public_jwk=client.public_jwk,
                    status="active",
                    created_at=now,
                    updated_at=now,
                )
            )
            return IssuedClient(client, secret)

        return await self.change(
            actor,
            "client.issued",
            {
                "client_id": client_id,
                "merchant_id": merchant_id,
                "role": client.role,
                "department": department,
                "buyer_code": buyer_code,
                "auth": [
                    m
                    for m, on in (("secret", bool(secret)), ("private_key_jwt", bool(public_jwk)))
                    if on
                ],
            },
            apply,
        )

    async def set_client_status(
        self, actor: Actor, client_id: str, status: str, reason: str = ""
    ) -> None:
        actor.may(Action.ISSUE_CLIENT)
        if status not in ("active", "disabled"):
            raise ValidationError("client status must be active or disabled")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> None:
            row = await _row(conn, ClientRow, ClientRow.client_id == client_id)
            if row is None:
                raise NotFoundError(f"client {client_id} does not exist")
            # Disabling a client stops its holder as surely as revoking its tokens.
            party = party_of(role=row.role, merchant_id=row.merchant_id)
            require_reach(actor.role, Reach.REVOKE, party, f"client {client_id}")
            await conn.execute(
                update(ClientRow)
                .where(ClientRow.client_id == client_id)
                .values(status=status, updated_at=now)
            )

        await self.change(
            actor, f"client.{status}", {"client_id": client_id, "reason": reason}, apply
        )

    async def revoke_token(self, actor: Actor, jti: str, reason: str) -> None:
        actor.may(Action.REVOKE_TOKEN)
        if not reason.strip():
            raise ValidationError("a revocation needs a reason")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> None:
            row = await _row(conn, TokenRow, TokenRow.jti == jti)
            if row is None:
                raise NotFoundError(f"token {jti} was not issued by this gateway")
            # Whose token it is comes from the tokens table (the role boundaries: the
            # operator never revokes its supervisors' tokens).
            party = party_of(role=row.role, merchant_id=row.merchant_id)
            # The message names no token id: refusals are records others read.
            require_reach(actor.role, Reach.REVOKE, party, "this token")
            if row.revoked_at is None:
                await conn.execute(
                    update(TokenRow)
                    .where(TokenRow.jti == jti)
                    .values(revoked_at=now, revoked_reason=reason[:500])
                )

        await self.change(actor, "token.revoked", {"jti": jti, "reason": reason}, apply)

    async def revoke_merchant_tokens(self, actor: Actor, merchant_id: str, reason: str) -> int:
        """Revoke every live token of merchant ``merchant_id``; only merchant tokens carry a
        merchant id, and the update says so again (``role`` null), so no staff token is
        ever caught by it."""
        actor.may(Action.REVOKE_TOKEN)
        require_reach(actor.role, Reach.REVOKE, Party.MERCHANT, f"merchant {merchant_id}'s tokens")
        if not reason.strip():
            raise ValidationError("a revocation needs a reason")

        async def apply(conn: AsyncConnection, now: dt.datetime) -> int:
            if await _row(conn, MerchantRow, MerchantRow.id == merchant_id) is None:
                raise NotFoundError(f"merchant {merchant_id} does not exist")
            result = await conn.execute(
                update(TokenRow)
                .where(
                    TokenRow.merchant_id == merchant_id,
                    TokenRow.role.is_(None),
                    TokenRow.revoked_at.is_(None),
                    TokenRow.expires_at > now,
                )
                .values(revoked_at=now, revoked_reason=reason[:500])
            )
            return int(result.rowcount or 0)

        return await self.change(
            actor, "token.revoked-all", {"merchant_id": merchant_id, "reason": reason}, apply
        )

    async def snapshot(self) -> PolicySnapshot:
        """The current policy as the gateway would see it (for listings)."""
        return await load_snapshot(self._engine, self._clock.now())
