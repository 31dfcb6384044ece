"""Staff roles and what each may do through the admin surface (RULES.md, "Roles")."""

from __future__ import annotations

from enum import StrEnum

from gateway.errors import ForbiddenError, ValidationError

__all__ = ["Action", "Role", "parse_role", "require"]


class Role(StrEnum):
    OPERATOR = "operator"
    AUTHORITY = "authority"
    SUPERVISOR = "supervisor"
    SOURCE = "source"
    EXCHANGE = "exchange"
    # A district (county) data bureau (县区数据局): rates the operator yearly (ZW art. 33).
    # Its client names its district as its ``department``.
    DISTRICT = "district"


class Action(StrEnum):
    REGISTER_DATASET = "dataset.register"
    MANAGE_SCENARIO = "scenario.manage"
    SUSPEND_SCENARIO = "scenario.suspend"
    REGISTER_MERCHANT = "merchant.register"
    SUSPEND_MERCHANT = "merchant.suspend"
    GRANT_AGREEMENT = "agreement.grant"
    MANAGE_AGREEMENT = "agreement.manage"
    ISSUE_CLIENT = "client.issue"
    REVOKE_TOKEN = "token.revoke"  # noqa: S105 - an action name
    READ_CALLS = "calls.read"
    READ_CATALOG = "catalog.read"
    READ_METRICS = "metrics.read"
    CHECK_APPLICATION = "application.check"
    REVIEW_APPLICATION = "application.review"
    CHECK_PRODUCT = "product.check"
    FILE_PRODUCT = "product.file"
    TRADE = "exchange.trade"
    DELIST_PRODUCT = "product.delist"
    IMPOSE_MEASURE = "measure.impose"
    LIFT_MEASURE = "measure.lift"
    READ_MEASURES = "measures.read"
    READ_ALERTS = "alerts.read"
    HANDLE_ALERT = "alerts.handle"
    TRACE_LEAK = "leak.trace"
    READ_REPORTS = "reports.read"
    FILE_OBJECTION = "objection.file"
    ANSWER_OBJECTION = "objection.answer"
    READ_OBJECTIONS = "objections.read"
    SET_RATING_FORM = "rating.form"
    SUBMIT_RATING = "rating.submit"
    READ_RATINGS = "ratings.read"


# The data bureau publishes scenarios and signs agreements; the operator onboards
# merchants and runs the gateway; source departments register their datasets; the
# supervisor can stop things but not grant them. Supervision measures (suspending supply,
# closing a channel, ...) belong to the supervisor and the data bureau; the operator sees
# them and handles alerts, and produces the reports it submits to the bureau.
# Data-quality objections (ZW art. 11): the operator files them (merchants file their own
# on their account surface) and answers those about tracing canaries, which no department
# could answer without revealing them; a source department answers those routed to it.
# The yearly evaluation (ZW art. 33): the bureau sets the rating forms and reads every
# rating; source departments and district bureaus (and merchants) rate the operator.
PERMISSIONS: dict[Role, frozenset[Action]] = {
    Role.AUTHORITY: frozenset(
        {
            Action.REGISTER_DATASET,
            Action.MANAGE_SCENARIO,
            Action.SUSPEND_SCENARIO,
            Action.SUSPEND_MERCHANT,
            Action.GRANT_AGREEMENT,
            Action.MANAGE_AGREEMENT,
            Action.REVOKE_TOKEN,
            Action.READ_CALLS,
            Action.READ_CATALOG,
            Action.FILE_PRODUCT,
            Action.IMPOSE_MEASURE,
            Action.LIFT_MEASURE,
            Action.READ_MEASURES,
            Action.READ_ALERTS,
            Action.TRACE_LEAK,
            Action.READ_REPORTS,
            Action.READ_OBJECTIONS,
            Action.SET_RATING_FORM,
            Action.READ_RATINGS,
        }
    ),
    Role.OPERATOR: frozenset(
        {
            Action.REGISTER_MERCHANT,
            Action.SUSPEND_MERCHANT,
            Action.ISSUE_CLIENT,
            Action.REVOKE_TOKEN,
            Action.READ_CALLS,
            Action.READ_CATALOG,
            Action.READ_METRICS,
            Action.CHECK_APPLICATION,
            Action.CHECK_PRODUCT,
            Action.READ_MEASURES,
            Action.READ_ALERTS,
            Action.HANDLE_ALERT,
            Action.READ_REPORTS,
            Action.FILE_OBJECTION,
            Action.ANSWER_OBJECTION,
            Action.READ_OBJECTIONS,
        }
    ),
    Role.SUPERVISOR: frozenset(
        {
            Action.SUSPEND_SCENARIO,
            Action.SUSPEND_MERCHANT,
            Action.MANAGE_AGREEMENT,
            Action.REVOKE_TOKEN,
            Action.READ_CALLS,
            Action.READ_CATALOG,
            Action.READ_METRICS,
            Action.DELIST_PRODUCT,
            Action.IMPOSE_MEASURE,
            Action.LIFT_MEASURE,
            Action.READ_MEASURES,
            Action.READ_ALERTS,
            Action.HANDLE_ALERT,
            Action.TRACE_LEAK,
            Action.READ_REPORTS,
            Action.READ_OBJECTIONS,
        }
    ),
    Role.SOURCE: frozenset(
        {
            Action.REGISTER_DATASET,
            Action.READ_CATALOG,
            Action.REVIEW_APPLICATION,
            Action.ANSWER_OBJECTION,
            Action.READ_OBJECTIONS,
            Action.SUBMIT_RATING,
        }
    ),
    Role.EXCHANGE: frozenset({Action.READ_CATALOG, Action.TRADE, Action.DELIST_PRODUCT}),
    Role.DISTRICT: frozenset({Action.READ_CATALOG, Action.SUBMIT_RATING}),
}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError(
            f"unknown role {value!r}; use one of {', '.join(r.value for r in Role)}"
        ) from None


def require(role: Role, action: Action) -> None:
    if action not in PERMISSIONS[role]:
        raise ForbiddenError(f"role {role.value} may not {action.value}", action=action.value)
