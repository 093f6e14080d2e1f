"""Address lists of the settings (CONSTRUCT_TRUSTED_PROXIES, CONSTRUCT_METRICS_ALLOWED)."""

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks_parse(entries) -> tuple[Network, ...]:
    """The addresses and networks (CIDRs) of `entries`; ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)
