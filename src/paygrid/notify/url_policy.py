"""Which notify_url paygrid may POST to (SSRF guard). Pure: ipaddress and urllib.parse only.

A notify_url is refused when it could make paygrid reach inside its own network: a host that
is (or resolves to) a loopback, private, link-local, CGNAT, unspecified, multicast or reserved
address; a host written in a non-canonical numeric form that resolvers read as an address
(``0x7f000001``, ``2130706433``, ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``); user
info (``user:pw@``); a scheme other than http(s). The networks in the allow list (one
setting, ``PAYGRID_NOTIFY_ALLOW_NETWORKS``) are let through after all.

:func:`check_url` runs at payment create (no DNS: a name is accepted on its form) and again
before every delivery, where :func:`check_address` then vets every resolved address.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from urllib.parse import urlsplit

IpAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = ("localhost",)  # and every name under .localhost (RFC 6761)

# Never a merchant's server, whatever ipaddress's flags say in this Python version.
BLOCKED_NETWORKS: tuple[Network, ...] = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT (RFC 6598)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64: reaches any IPv4 address, private ones included
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/32",  # Teredo
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds an IPv4 address
        "fc00::/7",  # unique local (fd00:ec2::254 is AWS's metadata service)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_FORBIDDEN_CHARS_RE = re.compile(r"[\x00-\x20\x7f\\]")
_V4_COMPATIBLE = IPv6Network("::/96")
MAX_HOSTNAME_LEN = 253


class UrlRefused(ValueError):
    """A notify_url or an address paygrid will not deliver to. ``reason`` is the coarse code
    shown to the merchant for a refused delivery; ``message`` says what is wrong."""

    def __init__(self, message: str, reason: str = "address_not_allowed") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """A checked notify_url, split for a pinned connection."""

    scheme: str
    host: str  # ASCII, lower case, no trailing dot; an IP literal without brackets
    port: int
    target: str  # path and query, as sent on the request line
    address: IpAddress | None  # the host's address when it needs no DNS (literal, localhost)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def host_is_address(self) -> bool:
        try:
            ip_address(self.host)
        except ValueError:
            return False
        return True

    def url_for(self, address: IpAddress) -> str:
        """The URL that connects to ``address`` (pinned), with our path and query."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8, ::1/128"`` -> networks; an empty string -> none. Raises ValueError."""
    networks = []
    for part in text.split(","):
        if part.strip():
            networks.append(ip_network(part.strip(), strict=True))
    return tuple(networks)


def address_allowed(address: IpAddress, allowed: Sequence[Network]) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # judge what the socket will really reach
    if any(address.version == n.version and address in n for n in allowed):
        return True
    if any(address.version == n.version and address in n for n in BLOCKED_NETWORKS):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local
    )


def check_address(address: IpAddress, allowed: Sequence[Network]) -> None:
    if not address_allowed(address, allowed):
        raise UrlRefused(f"address {address} is not a public address", "address_not_allowed")


def check_url(url: str, allowed: Sequence[Network]) -> NotifyTarget:
    """The notify_url split into a :class:`NotifyTarget`, or :class:`UrlRefused`."""
    if _FORBIDDEN_CHARS_RE.search(url):
        raise _bad("must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _bad("is not a valid URL (bad host or port)") from None
    if parts.scheme not in SCHEMES:
        raise _bad("must be an http or https URL")
    if "@" in parts.netloc:
        raise _bad("must not carry a user name or password")
    if port == 0:
        raise _bad("port 0 is not a valid port")
    if not parts.hostname:
        raise _bad("must name a host")
    address: IpAddress | None
    if parts.netloc.startswith("["):
        host, address = _ipv6_literal(parts.hostname, allowed)
    else:
        host, address = _name_or_ipv4(parts.hostname, allowed)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return NotifyTarget(parts.scheme, host, port or DEFAULT_PORTS[parts.scheme], target, address)


def _bad(why: str) -> UrlRefused:
    return UrlRefused(f"notify_url {why}", "invalid_url")


def _ipv6_literal(text: str, allowed: Sequence[Network]) -> tuple[str, IpAddress]:
    if "%" in text:
        raise _bad("must not carry an IPv6 zone")
    try:
        address = IPv6Address(text)
    except ValueError:
        raise _bad("has an invalid IPv6 address") from None
    if address.ipv4_mapped is not None or (address in _V4_COMPATIBLE and int(address) > 1):
        raise _bad("must write an IPv4 address as a.b.c.d, not inside IPv6")
    _refuse_address(address, allowed)
    return str(address), address


def _name_or_ipv4(text: str, allowed: Sequence[Network]) -> tuple[str, IpAddress | None]:
    try:
        host = text.encode("idna").decode("ascii").lower()  # also folds fullwidth digits
    except UnicodeError:
        raise _bad("has an invalid host name") from None
    host = host.removesuffix(".")
    if len(host) > MAX_HOSTNAME_LEN or not _HOSTNAME_RE.match(host):
        raise _bad("has an invalid host name")
    labels = host.split(".")
    dotted = len(labels) == 4 and all(re.fullmatch(r"0|[1-9][0-9]{0,2}", x) for x in labels)
    if dotted and text == host:
        try:
            address = IPv4Address(host)
        except ValueError:
            raise _bad("has an invalid IPv4 address") from None
        _refuse_address(address, allowed)
        return host, address
    if dotted or _NUMERIC_LABEL_RE.match(labels[-1]):
        # 2130706433, 0x7f000001, 0177.0.0.1, 127.1, 1.2.3.4.5, fullwidth digits, a trailing
        # dot: no DNS name ends in a number and resolvers read these as addresses. Only the
        # plain dotted-decimal form is accepted.
        raise _bad("must write an IP address in dotted decimal (a.b.c.d) form")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        loopback = IPv4Address("127.0.0.1")
        _refuse_address(loopback, allowed)
        return host, loopback
    return host, None


def _refuse_address(address: IpAddress, allowed: Sequence[Network]) -> None:
    if not address_allowed(address, allowed):
        raise UrlRefused(
            "notify_url must point to a public address: loopback, private, link-local, "
            "shared (CGNAT), multicast and reserved addresses are refused",
            "address_not_allowed",
        )
