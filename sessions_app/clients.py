"""Who is asking: the client's address, seen through trusted reverse proxies only.

The address keys the pairing lockout and the audit trail, so a client must not
be able to choose it. `X-Forwarded-For` is therefore believed only when the
peer that sent it is one of `CONSTRUCT_TRUSTED_PROXIES`; anyone else could
write any address there.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from construct_core.networks import Network, networks_parse as core_networks_parse
from construct_core.redaction import scrub

# PairingThrottle.client and AuditEvent.client hold at most this many characters.
MAX_CLIENT_CHARS = 64
UNKNOWN_CLIENT = "unknown"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def networks_parse(variable: str, entries: tuple[str, ...]) -> tuple[Network, ...]:
    """The addresses and networks of a setting; ImproperlyConfigured naming `variable` for a bad one."""
    # Keyed on the setting's value, so override_settings in tests just works.
    try:
        return core_networks_parse(entries)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{variable}: {exc}") from None


def address_in(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(
        address.version == net.version and address in net for net in networks
    )


def _parse_address(value: str) -> Address | None:
    """An IP from a header or a socket, tolerating a port and IPv6 brackets."""
    value = value.strip()
    if value.startswith("["):  # "[::1]:8000"
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # "10.0.0.1:8000"; a bare IPv6 has several colons
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address | None) -> bool:
    return address_in(
        address, networks_parse("CONSTRUCT_TRUSTED_PROXIES", tuple(settings.CONSTRUCT_TRUSTED_PROXIES))
    )


def peer_is_trusted_proxy(remote_addr: str | None) -> bool:
    """Whether the peer that sent a request is one of CONSTRUCT_TRUSTED_PROXIES."""
    return _is_trusted(_parse_address(remote_addr or ""))


def _display(value: str, address: Address | None) -> str:
    # Scrubbed before the cut: this text is stored (audit trail, devices, lockouts).
    return scrub(str(address) if address is not None else value.strip())[:MAX_CLIENT_CHARS]


def client_address(*, remote_addr: str | None, forwarded_for: str | None) -> str:
    """The client's address: the peer's, or the right-most untrusted hop behind trusted proxies.

    Each proxy appends the address it received the request from, so walking
    `X-Forwarded-For` from the right and skipping our own proxies gives the
    first address nobody we trust vouched for; anything left of it may be forged.
    """
    remote = (remote_addr or "").strip()
    remote_ip = _parse_address(remote)
    if not remote:
        return UNKNOWN_CLIENT
    if not forwarded_for or not _is_trusted(remote_ip):
        return _display(remote, remote_ip)
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        hop_ip = _parse_address(hop)
        if not _is_trusted(hop_ip):
            return _display(hop, hop_ip)
    # Every hop is one of ours: the request came from inside.
    if hops:
        return _display(hops[0], _parse_address(hops[0]))
    return _display(remote, remote_ip)


def client_from_request(request) -> str:
    """The client address of a Django HTTP request."""
    return client_address(
        remote_addr=request.META.get("REMOTE_ADDR"),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
    )


def client_ip(request) -> Address | None:
    """The client's IP address for an access rule, or None when it cannot be known.

    Unknown also when a peer we do not trust forwards for someone
    (`X-Forwarded-For`): that peer is a proxy (nginx on this host, say), and
    its own address, loopback perhaps, is not the client's.
    """
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if forwarded and not _is_trusted(_parse_address(request.META.get("REMOTE_ADDR") or "")):
        return None
    return _parse_address(client_from_request(request))


def client_from_scope(scope) -> str:
    """The client address of an ASGI scope (HTTP or WebSocket)."""
    peer = scope.get("client") or (None, None)
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers") or ()
        if name.lower() == b"x-forwarded-for"
    ]
    # Several X-Forwarded-For headers mean one list, in order (RFC 9110 5.3).
    return client_address(remote_addr=peer[0], forwarded_for=", ".join(forwarded) or None)
