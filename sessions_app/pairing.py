"""Pairing: one-time codes, device tokens, and the lockout that keeps codes from being guessed.

Only SHA-256 hashes of codes and tokens reach the database, so a copy of it
lets nobody in. Every state that must hold across server processes (which
codes are used, which client is locked out) lives in the database too.
"""

import hashlib
import hmac
import logging
import math
import secrets
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from construct_core.redaction import scrub
from sessions_app.audit import audit_record
from sessions_app.events import publish_device_revoked
from sessions_app.models import AuditEvent, PairedDevice, PairingCode, PairingThrottle
from sessions_app.services import default_owner

logger = logging.getLogger(__name__)

CODE_DIGITS = 6
CODE_TTL_SECONDS = 3600
TOKEN_PREFIX = "zc_"
TOKEN_HINT_CHARS = 6
# Five bad codes from one client within the window lock that client out.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=5)
# last_seen is for people, not for security: one write a minute is plenty.
LAST_SEEN_EVERY = timedelta(minutes=1)
# Used and expired codes are kept this long for inspection, then swept.
CODE_RETENTION = timedelta(days=1)


class PairingError(Exception):
    """A pairing attempt was refused."""


class InvalidPairingCode(PairingError):
    """The code is wrong, expired or already used."""


class PairingLocked(PairingError):
    """This client failed too often and must wait `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed pairing attempts; retry after {retry_after} s")
        self.retry_after = retry_after


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def token_hash(token: str) -> str:
    """The stored form of a device token."""
    return _sha256(token)


def code_hash(code: str) -> str:
    """The stored form of a pairing code.

    A bare SHA-256 of six digits is no secret to someone holding the table,
    but such a person can as well insert a device; the hash only keeps codes
    out of backups, logs and the admin while they are valid.
    """
    return _sha256((code or "").strip())


def pairing_required() -> bool:
    """Whether clients must present a paired device's token (CONSTRUCT_REQUIRE_PAIRING)."""
    return bool(settings.CONSTRUCT_REQUIRE_PAIRING)


# --- codes -------------------------------------------------------------------


def pairing_code_issue(*, ttl_seconds: int = CODE_TTL_SECONDS, user_id: int | None = None) -> str:
    """Create a one-time 6-digit code valid for `ttl_seconds`; return it (it is stored hashed).

    The device it pairs belongs to `user_id`, or to the default owner. Earlier
    codes stay valid until they expire or are used, so the code printed at
    start-up and one from `manage.py pairing_code` both work.
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    now = timezone.now()
    _housekeeping(now=now)
    PairingCode.objects.create(
        code_hash=code_hash(code), expires_at=now + timedelta(seconds=ttl_seconds), user_id=user_id
    )
    logger.info("issued a pairing code valid for %s s", ttl_seconds)
    return code


def _housekeeping(*, now: datetime) -> None:
    cutoff = now - CODE_RETENTION
    PairingCode.objects.filter(Q(expires_at__lt=cutoff) | Q(used_at__lt=cutoff)).delete()
    PairingThrottle.objects.filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now),
        window_started_at__lt=now - FAILURE_WINDOW - LOCKOUT,
    ).delete()


def _code_claim(*, code: str, now: datetime) -> PairingCode | None:
    """Mark the matching valid code used and return it, or None.

    Every candidate is compared in constant time, and the loop does not stop
    at a match, so timing tells nothing about the code. The conditional UPDATE
    is what makes a code one-time: of two concurrent claims only one changes
    the row, in any database.
    """
    presented = code_hash(code)
    match = None
    candidates = PairingCode.objects.filter(used_at__isnull=True, expires_at__gt=now)
    for pk, stored in candidates.values_list("pk", "code_hash"):
        if hmac.compare_digest(stored, presented):
            match = pk
    if match is None:
        return None
    claimed = PairingCode.objects.filter(pk=match, used_at__isnull=True).update(used_at=now)
    return PairingCode.objects.get(pk=match) if claimed == 1 else None


# --- lockout -----------------------------------------------------------------


def _throttle_for_update(*, client: str, now: datetime) -> PairingThrottle:
    """The client's throttle row, locked, with an elapsed window or lockout already reset."""
    throttle, _ = PairingThrottle.objects.select_for_update().get_or_create(
        client=client, defaults={"window_started_at": now}
    )
    lock_over = throttle.locked_until is not None and throttle.locked_until <= now
    window_over = throttle.window_started_at + FAILURE_WINDOW <= now
    if lock_over or (throttle.locked_until is None and window_over):
        throttle.failures = 0
        throttle.window_started_at = now
        throttle.locked_until = None
    return throttle


def _retry_after(*, locked_until: datetime, now: datetime) -> int:
    return max(1, math.ceil((locked_until - now).total_seconds()))


def _failure_record(*, throttle: PairingThrottle, now: datetime,
                    kind: str = AuditEvent.Kind.PAIRING_FAILURE, **detail) -> None:
    throttle.failures += 1
    audit_record(kind=kind, client=throttle.client, failures=throttle.failures, **detail)
    if throttle.failures >= MAX_FAILURES:
        throttle.locked_until = now + LOCKOUT
        audit_record(kind=AuditEvent.Kind.PAIRING_LOCKOUT, client=throttle.client,
                     failures=throttle.failures, seconds=int(LOCKOUT.total_seconds()))
        logger.warning("pairing locked for %s after %s failed attempts", throttle.client,
                       throttle.failures)
    throttle.save()


# --- devices -----------------------------------------------------------------


def device_create(*, user_id: int, name: str = "", client: str = "", last_seen=None,
                  revoked_at=None) -> tuple[PairedDevice, str]:
    """A new device of a user, and its token: the token is returned once, only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    device = PairedDevice.objects.create(
        user_id=user_id,
        name=scrub(name)[:200],
        token_hash=token_hash(token),
        token_hint=token[:TOKEN_HINT_CHARS],
        client=scrub(client)[:64],
        last_seen=last_seen,
        revoked_at=revoked_at,
    )
    return device, token


def device_pair(*, code: str, client: str, name: str = "") -> str:
    """Trade a valid one-time code for a new device token, returned this once only.

    Raises PairingLocked while `client` is locked out (even for a correct code)
    and InvalidPairingCode for a wrong, expired or used code. The throttle row
    is locked for the whole attempt, so one client's attempts are counted one
    at a time, in every process.
    """
    client = scrub(client or "unknown")[:64]
    name = scrub((name or "").strip())[:200]
    now = timezone.now()
    refusal: PairingError | None = None
    token = ""
    with transaction.atomic():
        throttle = _throttle_for_update(client=client, now=now)
        if throttle.locked_until is not None:
            refusal = PairingLocked(_retry_after(locked_until=throttle.locked_until, now=now))
        elif (claimed := _code_claim(code=code, now=now)) is None:
            _failure_record(throttle=throttle, now=now)
            refusal = InvalidPairingCode("invalid pairing code")
        else:
            user_id = claimed.user_id or default_owner().pk
            device, token = device_create(user_id=user_id, name=name, client=client, last_seen=now)
            throttle.delete()
            audit_record(kind=AuditEvent.Kind.PAIRING_SUCCESS, client=client,
                         device_id=device.pk, name=name, user_id=user_id)
            logger.info("device %s paired from %s", device.pk, client)
    # Raised after the block so the failure count and its audit entry commit.
    if refusal is not None:
        raise refusal
    return token


class InvalidCredentials(PairingError):
    """The username or the password is wrong (or the user may not sign in)."""


def device_sign_in(*, username: str, password: str, client: str, name: str = "") -> tuple[PairedDevice, str]:
    """Trade a Django user's username and password for a new device token (POST /login).

    The same per-client lockout as pairing codes: failures of either count
    together, and a locked-out client is refused even with the right password
    (PairingLocked). InvalidCredentials for a wrong username or password.
    """
    client = scrub(client or "unknown")[:64]
    name = scrub((name or "").strip())[:200]
    now = timezone.now()
    refusal: PairingError | None = None
    with transaction.atomic():
        throttle = _throttle_for_update(client=client, now=now)
        if throttle.locked_until is not None:
            refusal = PairingLocked(_retry_after(locked_until=throttle.locked_until, now=now))
        else:
            user = authenticate(username=username, password=password)
            if user is None or not user.is_active:
                _failure_record(throttle=throttle, now=now, kind=AuditEvent.Kind.LOGIN_FAILURE)
                refusal = InvalidCredentials("wrong username or password")
            else:
                device, token = device_create(user_id=user.pk, name=name or "signed in", client=client,
                                              last_seen=now)
                throttle.delete()
                audit_record(kind=AuditEvent.Kind.LOGIN_SUCCESS, client=client, device_id=device.pk,
                             user_id=user.pk)
                logger.info("user %s signed in as device %s from %s", user.pk, device.pk, client)
    if refusal is not None:
        raise refusal
    return device, token


def device_authenticate(*, token: str | None) -> PairedDevice | None:
    """The active device this token belongs to, or None."""
    if not token:
        return None
    presented = token_hash(token)
    device = (PairedDevice.objects.select_related("user")
              .filter(token_hash=presented, revoked_at__isnull=True, user__is_active=True).first())
    # The lookup is by hash, so its timing reveals nothing of the token; the
    # compare is a second, constant-time check that the row really matches.
    if device is None or not hmac.compare_digest(device.token_hash, presented):
        return None
    now = timezone.now()
    if device.last_seen is None or now - device.last_seen >= LAST_SEEN_EVERY:
        PairedDevice.objects.filter(pk=device.pk).update(last_seen=now)
        device.last_seen = now
    return device


def device_revoke(*, device_id: int, client: str = "") -> bool:
    """Revoke a device so its token stops working; False when it was unknown or already revoked."""
    with transaction.atomic():
        revoked = PairedDevice.objects.filter(pk=device_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            audit_record(kind=AuditEvent.Kind.DEVICE_REVOKED, client=client, device_id=device_id)
            # Open sockets of the device close at once, once the revocation is committed.
            transaction.on_commit(lambda: _revoked_publish(device_id))
    if revoked:
        logger.info("device %s revoked", device_id)
    return bool(revoked)


def _revoked_publish(device_id: int) -> None:
    try:
        async_to_sync(publish_device_revoked)(device_id)
    except Exception:  # the sockets still refuse the token at their next message
        logger.warning("could not tell the sockets of device %s", device_id, exc_info=True)


def device_active(*, device_id: int) -> bool:
    """Whether the device is paired and not revoked (the socket asks before each message)."""
    return PairedDevice.objects.filter(pk=device_id, revoked_at__isnull=True).exists()
