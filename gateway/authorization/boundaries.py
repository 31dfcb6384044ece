"""Role boundaries: whose tokens, credentials and records each staff role may act on or see.

:mod:`gateway.authorization.roles` says *what* a role may do (revoke a token, read the log);
this module says *to whom*. The two are separate because the answer to "may the operator
revoke tokens?" (yes: it runs the platform and onboards merchants) says nothing about
"may the operator revoke the supervisor's token?" (no: a supervised party must not be able
to switch off its supervisors, DESIGN §5a). The services ask both questions, so the
boundary holds whichever door (HTTP, CLI with staff credentials) a request comes through.

Every boundary is data in :data:`BOUNDARIES`, justified from RULES.md's "Roles" table; the
``docs/security.md`` table "Who may do what to whom" is this mapping written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from gateway.authorization.roles import Role
from gateway.errors import ForbiddenError

__all__ = [
    "BOUNDARIES",
    "STAFF",
    "Party",
    "Reach",
    "may_reach",
    "party_of",
    "require_reach",
]


class Party(StrEnum):
    """Whose token, credentials or record: a merchant, a buyer of data products, or the
    staff of one role."""

    MERCHANT = "merchant"
    BUYER = "buyer"
    OPERATOR = Role.OPERATOR.value
    AUTHORITY = Role.AUTHORITY.value
    SUPERVISOR = Role.SUPERVISOR.value
    SOURCE = Role.SOURCE.value
    EXCHANGE = Role.EXCHANGE.value
    DISTRICT = Role.DISTRICT.value


STAFF: frozenset[Party] = frozenset(Party(role.value) for role in Role)
_OUTSIDERS: frozenset[Party] = frozenset({Party.MERCHANT, Party.BUYER})
_EVERYONE: frozenset[Party] = frozenset(Party)


class Reach(StrEnum):
    """What one party may do to another's tokens, credentials or records."""

    # Revoke its tokens (one by id, or all of a merchant's) and disable its client
    # credentials: both stop the holder from calling.
    REVOKE = "revoke"
    # See its token ids in call records (``GET /admin/calls``) and in evidence bundles
    # (``GET /admin/bundles/...``). A token id is what revocation takes, and it ties a
    # person's every call together.
    SEE_TOKEN_IDS = "see-token-ids"  # noqa: S105 - a boundary name


# Whom each staff role reaches. A role absent from a Reach reaches nobody (it also lacks the
# permission in roles.PERMISSIONS). The local administrator (no role: the holder of the data
# directory and keystore passphrase) reaches everyone.
BOUNDARIES: Mapping[Role, Mapping[Reach, frozenset[Party]]] = {
    # The data bureau (市数据局) publishes scenarios, signs agreements and supervises; it
    # delegates security supervision to the information centre (LZ24 §四). It is the top of
    # the chain of supervision: it may stop anyone's access and see every token id.
    Role.AUTHORITY: {Reach.REVOKE: _EVERYONE, Reach.SEE_TOKEN_IDS: _EVERYONE},
    # The supervisor (信息中心) acts on the bureau's delegation: it supervises by log audit
    # and permission management (CS23 art. 24) and may close channels (CS23 art. 26), so it
    # stops the operator, the exchange, source departments and its own staff, but not the
    # bureau that delegated to it. It reads every record, token ids included (log audit).
    Role.SUPERVISOR: {
        Reach.REVOKE: _EVERYONE - {Party.AUTHORITY},
        Reach.SEE_TOKEN_IDS: _EVERYONE,
    },
    # The operator (运营机构) onboards merchants and runs the gateway (ZW art. 6, 17-23), so it
    # stops merchants' and buyers' access and its own staff's. It is the party supervised
    # (CS23 art. 24, 26): it never stops the bureau or the supervisor (DESIGN §5a: "the
    # operator cannot disable its supervisors"), nor a source department, whose silence past
    # a review deadline counts as approval (ZW art. 21), nor the exchange, which records
    # trades under the bureau's supervision (CS23 art. 20). It sees merchants' and buyers'
    # token ids (it revokes those) but no staff member's: those are the supervisors' to
    # audit, and a staff token id in the operator's hands is a handle on its supervisors.
    Role.OPERATOR: {
        Reach.REVOKE: _OUTSIDERS | {Party.OPERATOR},
        Reach.SEE_TOKEN_IDS: _OUTSIDERS,
    },
    # Source departments register and review (ZW art. 8, 21); the exchange lists and records
    # trades (CS23 art. 20). Neither revokes tokens nor reads the call log (no token.revoke,
    # no calls.read in roles.PERMISSIONS). Should a department ever read calls, it must see
    # only records about its own datasets.
    Role.SOURCE: {},
    Role.EXCHANGE: {},
    # District data bureaus (县区数据局) only rate the operator once a year (ZW art. 33): they
    # act on nobody's tokens or records. The operator does not reach them either (they are
    # among its raters), the bureau and the supervisor do.
    Role.DISTRICT: {},
}


def party_of(*, role: str | None, merchant_id: str | None) -> Party:
    """The party a token or client belongs to, from its stored ``role`` and ``merchant_id``:
    a staff role, else a merchant, else a buyer (the only clients with neither).

    Raises :class:`ValueError` for a role this gateway does not know.
    """
    if role is not None:
        return Party(Role(role).value)
    if merchant_id is not None:
        return Party.MERCHANT
    return Party.BUYER


def may_reach(role: Role | None, reach: Reach, party: Party) -> bool:
    """Whether staff of ``role`` (``None``: the local administrator) reach ``party``."""
    if role is None:
        return True
    return party in BOUNDARIES[role].get(reach, frozenset())


def require_reach(role: Role | None, reach: Reach, party: Party, what: str) -> None:
    """Raise :class:`ForbiddenError` unless ``role`` reaches ``party``; ``what`` names the
    target in the message (e.g. ``"token abc"``)."""
    if not may_reach(role, reach, party):
        assert role is not None
        raise ForbiddenError(
            f"role {role.value} may not {reach.value} {what}: it belongs to "
            f"{'a ' if party in _OUTSIDERS else 'the '}{party.value}"
            f"{'' if party in _OUTSIDERS else ' staff'} (see docs/security.md, "
            "'Who may do what to whom')",
            boundary=reach.value,
            party=party.value,
        )
