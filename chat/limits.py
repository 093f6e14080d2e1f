"""Rate limits and the socket cap of the chat socket, kept in this process.

A rate is a token bucket: a key may spend `count` at once and earns them back
at `count / seconds` per second, so a burst is allowed and a steady flood is
not. Keys are a paired device ("device:7"), or the client's address
("client:10.0.0.1") when pairing is off.

The state lives in memory, one set per event loop (one per server process, one
per test). Several server processes behind one Redis each keep their own
counts, so a client spread over N processes gets up to N times the limits;
that still bounds it, and costs no round trip per frame.
"""

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from django.conf import settings

from construct_core.loops import per_loop

# Buckets kept per limiter; past this the least recently used is forgotten
# (a forgotten bucket is a full one, which is what an idle key has anyway).
MAX_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` events per `seconds`."""

    count: int
    seconds: float

    def __str__(self):
        return f"{self.count}/{self.seconds:g}"


class RateLimiter:
    """Token buckets by key."""

    def __init__(self, *, max_keys: int = MAX_KEYS, clock=time.monotonic):
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def hit(self, key: str, rate: Rate | None) -> float:
        """Spend one for `key`: 0.0 when allowed, else the seconds until one is earned back."""
        if rate is None:
            return 0.0
        now = self._clock()
        tokens, stamp = self._buckets.pop(key, (float(rate.count), now))
        tokens = min(float(rate.count), tokens + (now - stamp) * rate.count / rate.seconds)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) * rate.seconds / rate.count
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self):
        return len(self._buckets)


class SocketCounter:
    """Open sockets by key, against a cap."""

    def __init__(self):
        self._open: dict[str, int] = {}

    def acquire(self, key: str, cap: int) -> bool:
        """Count one more socket for `key` unless `cap` are open already (a cap of 0: no cap)."""
        current = self._open.get(key, 0)
        if cap and current >= cap:
            return False
        self._open[key] = current + 1
        return True

    def release(self, key: str) -> None:
        current = self._open.get(key, 0) - 1
        if current > 0:
            self._open[key] = current
        else:
            self._open.pop(key, None)

    def count(self, key: str) -> int:
        return self._open.get(key, 0)


@dataclass
class Limits:
    """This process's limits: messages, new sockets, open sockets, and refusals worth an audit entry."""

    messages: RateLimiter = field(default_factory=RateLimiter)
    new_sockets: RateLimiter = field(default_factory=RateLimiter)
    open_sockets: SocketCounter = field(default_factory=SocketCounter)
    audited_refusals: RateLimiter = field(default_factory=RateLimiter)


# Refused sockets are audited, but a flood of them must not flood the trail:
# past this rate per client they are only counted in the log.
REFUSAL_AUDIT_RATE = Rate(20, 60.0)

# The limits of the running event loop.
get_limits = per_loop(Limits)


def limit_key(*, user_id: int | None, client: str) -> str:
    """Whose limits a socket counts against: its user (all their devices together), else its
    client address (pairing off: every client is the one default owner)."""
    if user_id is not None and settings.CONSTRUCT_REQUIRE_PAIRING:
        return f"user:{user_id}"
    return f"client:{client}"


def retry_after_seconds(wait: float) -> int:
    """A wait as the whole seconds a client is told (never 0)."""
    return max(1, math.ceil(wait))


# --- What the chat socket asks -------------------------------------------------


def _rate(value) -> Rate | None:
    """A rate from settings: a Rate, a (count, seconds) pair, or None for no limit."""
    if value is None or isinstance(value, Rate):
        return value
    return Rate(*value)


def socket_admit(key: str) -> str | None:
    """Take an open-socket slot for `key`; None when admitted, else why not.

    An admitted socket must give its slot back with `socket_release`.
    """
    limits = get_limits()
    cap = settings.CONSTRUCT_MAX_SOCKETS_PER_TOKEN
    if cap and limits.open_sockets.count(key) >= cap:
        return f"too many open sockets (at most {cap})"
    rate = _rate(settings.CONSTRUCT_SOCKET_RATE)
    wait = limits.new_sockets.hit(key, rate)
    if wait:
        return f"too many new sockets (at most {rate} s); retry after {retry_after_seconds(wait)} s"
    limits.open_sockets.acquire(key, cap)
    return None


def socket_release(key: str) -> None:
    get_limits().open_sockets.release(key)


def message_hit(key: str) -> int:
    """Count one message for `key`: 0 when allowed, else whole seconds to wait."""
    wait = get_limits().messages.hit(key, _rate(settings.CONSTRUCT_MESSAGE_RATE))
    return retry_after_seconds(wait) if wait else 0


def refusal_worth_auditing(client: str) -> bool:
    """Whether this refused socket still gets its own audit entry."""
    return not get_limits().audited_refusals.hit(client, REFUSAL_AUDIT_RATE)
