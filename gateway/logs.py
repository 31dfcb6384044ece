"""The gateway's log output: text or JSON lines on stderr, with secrets and personal data masked.

:func:`configure_logging` is called once per process by the command line, after the settings
are loaded. It installs one handler on the root logger that writes to ``sys.stderr`` (looked
up at each record, so a replaced stream is followed) in one of two formats:

``text`` (default)
    ``2025-01-02T03:04:05.678Z WARNING gateway.chain.worker: anchoring paused ...``, with
    ``[worker N]`` after the level in a worker process of ``dsgw serve --workers N``, and
    the exception's traceback on the following lines.
``json``
    One object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
    ``message`` (with its arguments filled in), ``pid``, ``worker`` (``DSGW_WORKER_ID`` as
    a string, only when set), ``exc`` (the traceback, when there is one), ``stack`` (when
    asked for), then every ``extra={...}`` field the caller passed; values JSON cannot hold
    are written as their ``str()``, and an extra whose name is taken by a field above gets
    an ``extra_`` prefix.

Before either format sees a record, :func:`redact_record` masks, in the message with its
arguments, in every extra field (nested ones too) and in the traceback:

- secrets, replaced by ``***``: ``Authorization:`` header values, ``Bearer`` tokens, JWTs
  (``eyJ...`` in three or more base64url parts), the password of a URL
  (``postgresql://user:***@host``, ``redis://:***@host``), ``password=``/``secret=``-style
  pairs, private keys as 64 hexadecimal digits with or without ``0x`` (except where the
  log names the value a transaction hash, hash or root: ``tx 0x...``, ``root=...``),
  PEM private-key blocks; an extra whose *name* says it holds a secret (``password``,
  ``client_secret``, ``authorization``, ``*_token``...) is replaced whole;
- personal data, masked as the data plane masks it (:mod:`gateway.privacy.masking`):
  resident identity numbers (18 characters) keep their first 3 and last character, mobile
  numbers (``1[3-9]`` and 9 digits, with an optional ``+86``) their first 3 and last 4
  digits, e-mail addresses the first character and the domain.

Unified social credit codes are company identifiers and stay readable: an all-digit
18-character code that passes the credit-code check and not the identity-number check
(:mod:`gateway.identifiers`) is left alone; any other 18-character number is masked, since
a mistyped identity number is still one.

Third-party loggers that would flood at INFO (aiohttp's access and server logs,
SQLAlchemy, asyncio, uvloop, web3 and the EVM, Alembic, ...) are held at WARNING whatever
``log_level`` says. Request bodies are never logged; the optional access log
(:mod:`gateway.api.access_log`) names the path without its query string.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO

from gateway.identifiers import is_valid_resident_id, is_valid_uscc
from gateway.privacy.masking import MaskRule, mask
from gateway.settings import Settings

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "WORKER_ENV",
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
    "redact_record",
]

LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Set by ``dsgw serve --workers N`` in each worker process; read when a record is written,
#: so that it is right in a worker forked after logging was configured.
WORKER_ENV: Final = "DSGW_WORKER_ID"
MASK: Final = "***"

#: Loggers held at WARNING at least: chatty at INFO or DEBUG, and aiohttp's access log
#: would write query strings (``dsgw.access`` replaces it).
QUIET_LOGGERS: Final = (
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "alembic",
    "asyncio",
    "asyncpg",
    "aiosqlite",
    "eth",
    "evm",
    "trie",
    "redis",
    "sqlalchemy",
    "urllib3",
    "uvloop",
    "web3",
)

# -- redaction ------------------------------------------------------------------------------

_PEM_PRIVATE_KEY: Final = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# The header's value runs to the end of the line or a closing quote: "Bearer x", "Basic x".
_AUTHORIZATION: Final = re.compile(
    r"(?i)\b((?:proxy-)?authorization[\"']?+\s*+[:=]\s*+[\"']?+)(?!\*\*\*)[^\r\n\"']+"
)
_BEARER: Final = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/]{8,}=*")
_JWT: Final = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){2,4}(?![A-Za-z0-9_-])"
)
# scheme://user:password@host (user may be empty, as in redis://:password@host).
_URL_PASSWORD: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?!\*\*\*@)[^@\s]+@")
_SECRET_PAIR: Final = re.compile(
    r"(?i)\b([A-Za-z0-9_-]*(?:password|passwd|passphrase|secret|access_token|refresh_token"
    r"|id_token|api_key|apikey|private_key)[\"']?+\s*+[:=]\s*+[\"']?+)(?!\*\*\*)[^\s\"',;&}]+"
)
_HEX_KEY: Final = re.compile(r"(?<![0-9A-Za-z])(0[xX])?[0-9a-fA-F]{64}(?![0-9A-Za-z])")
_RESIDENT_ID: Final = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
# Not an amount of wei: gas prices of 13 to 19 gwei have the same eleven digits.
_MOBILE: Final = re.compile(
    r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[ -]?)?1[3-9][0-9]{9}(?![0-9A-Za-z])(?! ?g?wei\b)"
)
_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# No '/' before the local part: "postgresql://user@host.example" is a URL, not an address.
_EMAIL: Final = re.compile(
    rf"(?<![A-Za-z0-9._%+/-])[A-Za-z0-9._%+-]+@{_LABEL}(?:\.{_LABEL})+(?![A-Za-z0-9-])"
)
#: Extra-field names whose values are secrets whatever they look like.
_SECRET_NAME: Final = re.compile(
    r"(?i)(?:^|[_-])(?:password|passwd|passphrase|secret|authorization|cookie|api_?key"
    r"|private_?key|token)$"
)


def _resident_id(match: re.Match[str]) -> str:
    value = match.group(0)
    upper = value.upper()
    if is_valid_uscc(upper) and not is_valid_resident_id(upper):
        return value  # an all-digit unified social credit code: a company, not a person
    return mask(MaskRule.RESIDENT_ID, value) or MASK


def _masked_by(rule: MaskRule) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        return mask(rule, match.group(0)) or MASK

    return replace


# A 64-hex value the log names as a public hash (``tx 0x..``, ``root=..``) is left readable:
# anchors are looked up by their transaction hash. Any other one may be a private key.
_PUBLIC_HASH_BEFORE: Final = re.compile(r"(?i)(?:\btx|transaction|tx_hash|hash|root)[\s:=\"']*$")


def _hex_key(match: re.Match[str]) -> str:
    before = match.string[max(0, match.start() - 16) : match.start()]
    if _PUBLIC_HASH_BEFORE.search(before):
        return match.group(0)
    return (match.group(1) or "") + MASK


_PEM_MASK: Final = rf"-----BEGIN \1PRIVATE KEY-----{MASK}-----END \1PRIVATE KEY-----"

# (cheap precondition on the text, pattern, replacement), applied in this order: secrets
# first, so that a token is gone before the personal-data patterns look at its digits.
_RULES: Final[tuple[tuple[Callable[[str], bool], re.Pattern[str], Any], ...]] = (
    (lambda t: "PRIVATE KEY" in t, _PEM_PRIVATE_KEY, _PEM_MASK),
    (lambda t: "uthorization" in t or "UTHORIZATION" in t, _AUTHORIZATION, rf"\1{MASK}"),
    (lambda t: "earer" in t or "EARER" in t, _BEARER, rf"\1{MASK}"),
    (lambda t: "eyJ" in t, _JWT, MASK),
    (lambda t: "://" in t, _URL_PASSWORD, rf"\1{MASK}@"),
    (lambda t: ":" in t or "=" in t, _SECRET_PAIR, rf"\1{MASK}"),
    (lambda t: len(t) >= 64, _HEX_KEY, _hex_key),
    (lambda t: len(t) >= 11, _RESIDENT_ID, _resident_id),
    (lambda t: len(t) >= 11, _MOBILE, _masked_by(MaskRule.MOBILE)),
    (lambda t: "@" in t, _EMAIL, _masked_by(MaskRule.EMAIL)),
)


def redact(text: str) -> str:
    """``text`` with the secrets and personal data listed in the module docstring masked.

    Idempotent: masked output is left as it is by a second pass.
    """
    for applies, pattern, replacement in _RULES:
        if applies(text):
            text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    """A JSON-ready, redacted copy of an extra field's value: strings are redacted,
    mappings and sequences copied with their members redacted, numbers kept unless they
    read as personal data (a mobile number passed as an int), anything else ``str()``-ed."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int):
        text = str(value)
        masked = redact(text)
        return value if masked == text else masked
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth < 8 and isinstance(value, Mapping):
        return {
            str(key): MASK if _is_secret_name(str(key)) else _redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if depth < 8 and isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item, depth + 1) for item in value]
    return redact(str(value))


def _is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES: Final = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_REDACTED: Final = "_dsgw_redacted"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place, once: its message is rendered with its arguments and
    redacted (``args`` become empty), its extra fields and traceback redacted."""
    if getattr(record, _REDACTED, False):
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # arguments that do not fit the format: keep both
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    for key, value in _extras(record).items():
        record.__dict__[key] = MASK if _is_secret_name(key) else _redact_value(value)
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    setattr(record, _REDACTED, True)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record (see :func:`redact_record`) and keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


# -- formats --------------------------------------------------------------------------------


def _rfc3339(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _worker() -> str | None:
    return os.environ.get(WORKER_ENV) or None


class TextFormatter(logging.Formatter):
    """``time level [worker N] logger: message``, then the traceback, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        worker = _worker()
        where = f" [worker {worker}]" if worker else ""
        line = f"{_rfc3339(record.created)} {record.levelname}{where} {record.name}: "
        line += record.getMessage()
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        document: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        worker = _worker()
        if worker:
            document["worker"] = worker
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        for key, value in _extras(record).items():
            name = key
            while name in document:
                name = "extra_" + name
            document[name] = value
        # default=str: an extra that redact_record did not reach (a formatter used alone).
        return json.dumps(document, ensure_ascii=False, default=str, allow_nan=False)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record arrives (as logging's last-resort
    handler does), or to a fixed stream when one is given."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # the base class sets it once; the property decides


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Send this process's log records to stderr (or ``stream``) in ``settings.logging.format``
    at ``settings.logging.level``, redacted.

    Replaces the handler an earlier call installed and leaves other handlers of the root
    logger (a test harness's) in place. ``settings`` were validated when loaded, so the
    format and level are known ones.
    """
    level = logging.getLevelNamesMapping()[settings.logging.level.upper()]
    handler = _StderrHandler(stream)
    handler.setFormatter(JsonFormatter() if settings.logging.format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
