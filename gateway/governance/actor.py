"""Who makes a governance change: a staff role, the local administrator at the console, a
merchant on its own surface, an applicant, or the gateway itself. Every change record
names its actor, and every change first asks the actor whether it may."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.authorization.roles import Action, Role, require
from gateway.errors import ForbiddenError

if TYPE_CHECKING:
    from gateway.catalog.models import Dataset

__all__ = ["LOCAL_ADMIN", "Actor"]


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
