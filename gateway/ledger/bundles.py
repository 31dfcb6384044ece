"""``verify_bundle`` over a bundle document, as the CLI has always called it.

Evidence bundles live in :mod:`gateway.evidence` (models, key ring, :func:`verify`) and
are assembled by :mod:`gateway.evidence.build`; this module keeps the document-level entry
point the CLI and older callers use, delegating to that one verification.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.evidence.anchor import ANCHOR_MEMBERS
from gateway.evidence.bundle import BUNDLE_FORMAT, EvidenceBundle
from gateway.evidence.keys import KeyRing
from gateway.evidence.notes import NoteVerifier
from gateway.evidence.verify import Verification, verify

__all__ = [
    "ANCHOR_MEMBERS",
    "BUNDLE_FORMAT",
    "BundleCheck",
    "parse_verifier_key",
    "verify_bundle",
]

BundleCheck = Verification
"""The older name of :class:`gateway.evidence.Verification`."""


def parse_verifier_key(text: str) -> NoteVerifier:
    """``name+keyid+base64(0x01 || key)`` (C2SP signed-note verifier key) to a verifier."""
    return NoteVerifier.from_text(text)


def verify_bundle(
    document: Mapping[str, Any], *, trusted_key: str | Sequence[str] | None = None
) -> Verification:
    """Parse ``document`` (:meth:`EvidenceBundle.from_json`) and :func:`verify` it with the
    ``trusted_key`` verifier key strings (one or several: the operator's current and
    retired ones), or with the bundle's own key and a warning when none is given.

    Raises :class:`ValidationError` or :class:`CheckpointError` naming the failing step.
    """
    bundle = EvidenceBundle.from_json(document)
    if trusted_key is None:
        return verify(bundle)
    trusted = [trusted_key] if isinstance(trusted_key, str) else list(trusted_key)
    return verify(bundle, KeyRing.from_texts(trusted))
