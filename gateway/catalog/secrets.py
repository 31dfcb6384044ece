"""Source credentials: a catalog entry names a secret, the gateway resolves it when it opens
the source, and the value never enters the catalog, a record or a listing.

A reference is ``keystore:NAME`` (a named secret in the encrypted keystore, put with
``dsgw secrets set NAME``, optionally bound to one provider) or ``env:DSGW_SRC_NAME`` (an
environment variable of the gateway's processes, taken by :mod:`gateway.settings`).

Who may name which secret: a keystore secret bound to a provider serves only datasets of
that provider; a source department's client may name only keystore secrets bound to its
own department, since an unbound or environment secret could belong to anyone and a
department that named it could send it to a server it controls. The authority and the
local administrator may name any secret whose binding fits the dataset's provider.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.catalog.secret_names import SOURCE_SECRET_PREFIX
from gateway.errors import (
    ForbiddenError,
    KeystoreError,
    SourceUnavailableError,
    ValidationError,
)
from keys.keystore import SECRET_NAME, Keystore

__all__ = ["SecretRef", "SourceSecrets"]

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(re.escape(SOURCE_SECRET_PREFIX) + r"[A-Z0-9_]{1,64}")
_HOW = (
    '"keystore:NAME" (put the secret with `dsgw secrets set NAME --provider PROVIDER`) or '
    f'"env:{SOURCE_SECRET_PREFIX}NAME" (a variable of the gateway\'s environment)'
)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a source's password lives; ``str()`` gives the reference as written."""

    scheme: Literal["env", "keystore"]
    name: str

    @classmethod
    def parse(cls, value: object) -> SecretRef:
        if isinstance(value, str):
            scheme, _, name = value.partition(":")
            if scheme == "keystore" and SECRET_NAME.fullmatch(name):
                return cls("keystore", name)
            if scheme == "env" and _ENV_NAME.fullmatch(name):
                return cls("env", name)
        raise ValidationError(
            f"source credentials must be a secret reference: {_HOW}", member="credentials"
        )

    def __str__(self) -> str:
        return f"{self.scheme}:{self.name}"


class SourceSecrets:
    """Resolves secret references from the keystore and the ``DSGW_SRC_*`` variables."""

    def __init__(self, keystore: Keystore, environment: Mapping[str, str]) -> None:
        self._keystore = keystore
        self._environment = dict(environment)

    def _lookup(self, ref: SecretRef) -> tuple[str | None, str]:
        """The secret's provider binding and value; :class:`KeystoreError` if missing."""
        if ref.scheme == "env":
            value = self._environment.get(ref.name)
            if value is None:
                raise KeystoreError(
                    f"secret {ref} is not set in the gateway's environment; set {ref.name} "
                    "for every gateway process (or use a keystore secret)"
                )
            return None, value
        # `dsgw secrets set` may have run since this process opened the keystore.
        self._keystore.reload_if_changed()
        info, stored = self._keystore.named_secret(ref.name)
        return info.provider, stored.decode("utf-8")

    def check(self, ref: SecretRef, *, provider: str, department: str | None) -> None:
        """At registration: the secret exists and this registrant may name it for a
        dataset of ``provider``. ``department`` is the registering source department's,
        None for the authority and the local administrator.

        Raises :class:`ValidationError` for a missing secret and :class:`ForbiddenError`
        for one the registrant may not use.
        """
        try:
            bound, _value = self._lookup(ref)
        except KeystoreError as exc:
            raise ValidationError(
                f"source credentials: {exc.detail}", member="credentials"
            ) from None
        if department is not None and (ref.scheme != "keystore" or bound != department):
            raise ForbiddenError(
                f"source credentials: a source department names only keystore secrets bound "
                f"to it; ask the local administrator to run `dsgw secrets set {ref.name} "
                f"--provider {department}`"
            )
        if bound is not None and bound != provider:
            raise ForbiddenError(
                f"source credentials: secret {ref} is bound to another provider; it serves "
                "only that provider's datasets"
            )

    def resolve(self, ref: SecretRef, *, provider: str, dataset_id: str) -> str:
        """At connect time: the secret's value. A missing secret, or one bound to another
        provider since the dataset was registered, makes the source unavailable (503): the
        caller cannot fix it, the local administrator can, from the warning logged."""
        try:
            bound, value = self._lookup(ref)
        except KeystoreError as exc:
            cause = exc.detail
        else:
            if bound is None or bound == provider:
                return value
            cause = f"secret {ref} is bound to another provider than {provider}"
        log.warning("source of dataset %s: credentials: %s", dataset_id, cause)
        raise SourceUnavailableError(
            f"dataset {dataset_id}: its source credentials cannot be resolved; the gateway's "
            "log says why"
        )
