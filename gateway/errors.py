"""The one exception hierarchy of dsgw.

Every error a user can cause or meet is a :class:`DsgwError` subclass carrying a stable
problem ``slug`` (the last segment of its RFC 9457 ``type``), the HTTP status the API maps it
to, and a message that says what to do. The HTTP layer and the CLI translate these in one
place each; domain code never builds HTTP responses.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AgreementError",
    "AuditScopeError",
    "AuditStateError",
    "AuthenticationError",
    "BadRequestError",
    "CatalogError",
    "ConfigError",
    "ConflictError",
    "DependencyUnavailableError",
    "DiskFullError",
    "DsgwError",
    "ForbiddenError",
    "HeaderTooLargeError",
    "InvalidClientError",
    "InvalidTokenError",
    "KeystoreError",
    "KeystoreUnavailableError",
    "LogUnavailableError",
    "MeasureInForceError",
    "MethodNotAllowedError",
    "NotEntitledError",
    "NotFoundError",
    "NotReceivedError",
    "OutOfScopeError",
    "PayloadTooLargeError",
    "PrivacyBudgetExhaustedError",
    "QuotaExceededError",
    "QuotaStoreUnavailableError",
    "RateLimitedError",
    "SourceNotAllowedError",
    "SourceUnavailableError",
    "StoreUnavailableError",
    "SuspendedError",
    "TokenRevokedError",
    "UnsupportedMediaTypeError",
    "UriTooLongError",
    "ValidationError",
    "VerificationBudgetExhaustedError",
    "all_problem_types",
]


class DsgwError(Exception):
    """Root of every dsgw error; ``str(err)`` is the actionable message. Raised as itself
    it is an internal error: the server failed, not the request."""

    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    status: ClassVar[int] = 500
    # Seconds after which a retry may succeed, sent as ``Retry-After`` (RFC 9110 §10.2.3);
    # None where retrying the same request cannot help.
    retry_after: int | None = None

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        # Extra problem members (RFC 9457 §3.2), e.g. which field was refused.
        self.extensions: dict[str, Any] = extensions


class ConfigError(DsgwError):
    slug = "config"
    title = "Configuration error"
    status = 500


class KeystoreError(DsgwError):
    slug = "keystore"
    title = "Keystore error"
    status = 500


class BadRequestError(DsgwError):
    slug = "bad-request"
    title = "Bad request"
    status = 400


class ValidationError(BadRequestError):
    slug = "validation"
    title = "Invalid input"


class PayloadTooLargeError(BadRequestError):
    slug = "payload-too-large"
    title = "Request body too large"
    status = 413


class UriTooLongError(BadRequestError):
    """The request target (path and query) is longer than the server reads."""

    slug = "uri-too-long"
    title = "Request target too long"
    status = 414


class HeaderTooLargeError(BadRequestError):
    """A request header line is longer than the server reads, or there are too many."""

    slug = "header-too-large"
    title = "Request header fields too large"
    status = 431


class UnsupportedMediaTypeError(BadRequestError):
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    status = 415


class AuthenticationError(DsgwError):
    slug = "unauthenticated"
    title = "Authentication required"
    status = 401


class InvalidTokenError(AuthenticationError):
    slug = "invalid-token"
    title = "Invalid access token"


class TokenRevokedError(InvalidTokenError):
    slug = "token-revoked"
    title = "Access token revoked"


class InvalidClientError(AuthenticationError):
    slug = "invalid-client"
    title = "Client authentication failed"


class ForbiddenError(DsgwError):
    slug = "forbidden"
    title = "Forbidden"
    status = 403


class OutOfScopeError(ForbiddenError):
    """A call reaches past what the token's scenario authorizes."""

    slug = "out-of-scope"
    title = "Outside the authorized scenario"


class SourceNotAllowedError(ForbiddenError):
    """A dataset's source lies outside where the local administrator allows source rows to
    live (settings ``source_directories`` and ``source_hosts``), or is the gateway's own
    store, keystore or data directory, which are never a source."""

    slug = "source-not-allowed"
    title = "Source location not allowed"


class SuspendedError(ForbiddenError):
    slug = "suspended"
    title = "Suspended or inactive"


class MeasureInForceError(SuspendedError):
    """A supervision measure stops the call (ZW art. 27; CS23 art. 26): supply of a dataset
    suspended, a merchant's data channel closed, a scenario suspended or a product delisted.
    Only lifting the measure restores it; ``measure`` names the measure, ``measure_kind`` and
    ``measure_target`` what it stops."""

    slug = "measure-in-force"
    title = "Stopped by a supervision measure"


class AgreementError(ForbiddenError):
    slug = "agreement"
    title = "No usable agreement"


class NotEntitledError(ForbiddenError):
    """A buyer's delivery without a trade that entitles it: none bought, or every
    purchased unit used."""

    slug = "not-entitled"
    title = "No purchased units left"


class NotFoundError(DsgwError):
    slug = "not-found"
    title = "Not found"
    status = 404


class MethodNotAllowedError(DsgwError):
    slug = "method-not-allowed"
    title = "Method not allowed"
    status = 405


class AuditScopeError(BadRequestError):
    """An exact aggregate would take more subject-level rows than the overlap audit checks
    in one call (the setting ``aggregate_audit_max_rows``, docs/privacy.md). Narrow the
    filters (a month, a list of employers) or group by fewer fields."""

    slug = "aggregate-too-large"
    title = "Aggregate too large to audit"
    status = 422


class ConflictError(DsgwError):
    slug = "conflict"
    title = "Conflict with current state"
    status = 409


class CatalogError(ConflictError):
    """A catalog rule forbids the change (e.g. granting a dataset that is not open)."""

    slug = "catalog-rule"
    title = "Refused by catalog rules"
    status = 422


class NotReceivedError(ConflictError):
    """A data-quality objection names data its filer did not receive: a call record that is
    not its own (or does not exist), a refused call, or a dataset, field or subject the
    named answer did not deliver. The same words for a record that is another merchant's
    and one that does not exist: whether it exists is not the filer's to learn."""

    slug = "not-received"
    title = "Not received by the filer"
    status = 422


class RateLimitedError(DsgwError):
    slug = "rate-limited"
    title = "Rate limit exceeded"
    status = 429

    def __init__(self, detail: str, retry_after: int, **extensions: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extensions)
        self.retry_after = retry_after


class QuotaExceededError(RateLimitedError):
    slug = "quota-exceeded"
    title = "Quota exhausted"


class PrivacyBudgetExhaustedError(DsgwError):
    """An ``aggregate-dp`` call would spend more of the agreement's differential-privacy
    budget (ε or δ) than the scenario declares for the period (docs/privacy.md). 429 like
    a quota: the request is fine, the allowance is used up. ``Retry-After`` names the end
    of a day or month period; a budget for the whole agreement never comes back, so there
    is none (the merchant needs a new agreement or a scenario with a larger budget)."""

    slug = "privacy-budget-exhausted"
    title = "Privacy budget exhausted"
    status = 429

    def __init__(self, detail: str, retry_after: int | None = None, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after


class VerificationBudgetExhaustedError(RateLimitedError):
    """An agreement received as many negative ``verify`` answers about one subject as its
    verification budget allows in the current window (docs/privacy.md): walking a
    sensitive field's values through yes/no answers is refused. ``Retry-After`` is the
    window's end; the extensions carry ``negatives``, ``bound`` and ``window_end``."""

    slug = "verification-budget-exhausted"
    title = "Verification budget exhausted"
    # The window's figures (gateway.privacy.verify_budget.BudgetFigures) for the record.
    figures: Any = None


class SourceUnavailableError(DsgwError):
    """A data source or a product's service failed or did not answer in time; retry later."""

    slug = "source-unavailable"
    title = "Data source unavailable"
    status = 503
    retry_after = 5


class DependencyUnavailableError(DsgwError):
    """Something every call needs (the store, the disk, Redis, the keystore) failed, so the
    gateway refuses rather than answer without it; retry after ``Retry-After`` seconds.
    The detail never carries a driver message or an internal address: operators find
    those in the gateway's log (one line when the dependency goes, one when it is back)."""

    slug = "dependency-unavailable"
    title = "A required service is unavailable"
    status = 503
    retry_after = 5
    # Which dependency (gateway.dependencies.DEPENDENCIES) failed: the metric's label.
    dependency: ClassVar[str] = "database"

    def __init__(self, detail: str, *, outage: bool = True, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        # False when the dependency answers but is saturated (no pooled connection came
        # free in time): refused all the same, but not an outage to log or count as down.
        self.outage = outage
        # Set once gateway.dependencies.DependencyHealth counted it, so an error shared by
        # every call of a failed batch counts as one failure.
        self.reported = False


class AuditStateError(DsgwError):
    """The overlap audit of exact aggregates met a record of an answered cell it cannot
    read, so it cannot decide whether a new cell differs from it by a few subjects; the
    gateway answers nothing rather than answer unaudited. Operators: docs/privacy.md,
    "Exact aggregates: the overlap audit"."""

    slug = "audit-unavailable"
    title = "Overlap audit unavailable"
    status = 503


class StoreUnavailableError(DependencyUnavailableError):
    """The gateway's own database did not answer, or had no free connection in time; the
    gateway neither answers nor decides without it. Retry shortly; operators: check the
    database (the gateway's log names the failure)."""

    slug = "store-unavailable"
    title = "Gateway store unavailable"


class LogUnavailableError(DependencyUnavailableError):
    """The call log could not commit; the gateway refuses to answer rather than answer
    unlogged. Retry shortly; operators: check the database."""

    slug = "log-unavailable"
    title = "Call log unavailable"


class QuotaStoreUnavailableError(DependencyUnavailableError):
    """The shared quota store (Redis) could not be reached; the call is refused rather than
    answered without its rate limit and quota. Retry shortly; operators: check Redis."""

    slug = "quota-unavailable"
    title = "Quota store unavailable"
    dependency = "redis"


class DiskFullError(DependencyUnavailableError):
    """The disk holding the gateway's store or data directory is full, so nothing can be
    recorded and nothing is answered. Operators: free space (readiness reports it)."""

    slug = "disk-full"
    title = "Gateway disk full"
    dependency = "disk"
    retry_after = 30


class KeystoreUnavailableError(DependencyUnavailableError):
    """The gateway's keystore (signing keys) could not be read while serving. Operators:
    restore the keystore file; the gateway's log names the failure."""

    slug = "keystore-unavailable"
    title = "Gateway keystore unavailable"
    dependency = "keystore"
    retry_after = 30


def all_problem_types() -> list[type[DsgwError]]:
    """Every concrete error class, for the problem registry and the OpenAPI check."""
    seen: list[type[DsgwError]] = []
    stack: list[type[DsgwError]] = [DsgwError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return sorted(seen, key=lambda c: c.slug)
