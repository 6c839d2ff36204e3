"""Defect 6, the notify_url policy itself (notify/url_policy.py): every form an attacker can
write an internal address in, refused; real merchants' URLs accepted; the allow list
(PAYGRID_NOTIFY_ALLOW_NETWORKS) as the only exception. Pure functions, no network."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from paygrid import config
from paygrid.notify.url_policy import (
    BLOCKED_NETWORKS,
    UrlRefused,
    address_allowed,
    check_url,
    parse_networks,
)

EMBEDDED = parse_networks("127.0.0.0/8")
PROD = parse_networks("")

# Refused whatever the allow list of either profile says.
INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://169.254.0.1/",
    "http://[fd00:ec2::254]/",  # AWS metadata over IPv6 (ULA)
    "http://[fc00::1]/",
    "http://[fe80::1]/",  # link-local
    "http://[fec0::1]/",  # site-local
    "http://10.0.0.1/",
    "http://10.255.255.255:8080/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://100.127.255.254/",
    "http://0.0.0.0/",  # unspecified: the local host
    "http://0.1.2.3/",
    "http://[::]/",
    "http://[::1]/",  # IPv6 loopback (only 127.0.0.0/8 is allowed when embedded)
    "http://224.0.0.1/",  # multicast
    "http://239.255.255.250:1900/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://192.0.0.8/",
    "http://192.0.2.1/",  # documentation
    "http://198.18.0.1/",  # benchmarking
    "http://[2001:db8::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://[2001::1]/",  # Teredo
    "http://[100::1]/",  # discard
]
NON_CANONICAL = [
    "http://0x7f000001/",
    "http://0X7F000001/",
    "http://2130706433/",
    "http://2130706433:22/",
    "http://0177.0.0.1/",
    "http://0177.0000.0000.0001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://0x7f.0.0.1/",
    "http://0x7f.1/",
    "http://127.0.0.01/",
    "http://017700000001/",
    "http://0/",
    "http://1.2.3.4.5/",
    "http://127.0.0.1./",  # trailing dot
    "http://１２７.０.０.１/",  # fullwidth digits, folded by IDNA into 127.0.0.1
    "http://169.254.169.254./",
    "http://0xa9fea9fe/",  # 169.254.169.254
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:8.8.8.8]/",  # even a public one: write it as a.b.c.d
    "http://[::127.0.0.1]/",  # IPv4-compatible IPv6
    "http://[0:0:0:0:0:ffff:7f00:1]/",
]
MALFORMED = [
    "ftp://example.com/notify",
    "file:///etc/passwd",
    "gopher://example.com:70/",
    "javascript:alert(1)",
    "//example.com/notify",
    "example.com/notify",
    "http:///notify",
    "http://user:pw@example.com/notify",  # credentials
    "http://user@example.com/notify",
    "http://@example.com/notify",
    "http://example.com:pw@10.0.0.1/",
    "http://example.com\\@127.0.0.1/",  # parser differential
    "http://example.com /notify",
    "http://example.com/\r\nX-Injected: 1",
    "http://example.com\t/",
    "http://exa\x00mple.com/",
    "http://example.com:0/",
    "http://example.com:65536/",
    "http://example.com:-1/",
    "http://example.com:http/",
    "http://[fe80::1%25eth0]/",  # IPv6 zone
    "http://[::1/",
    "http://[not-an-address]/",
    "http://exa_mple.com/",
    "http://-example.com/",
    "http://example..com/",
    "http://%31%32%37.0.0.1/",
    "http://" + "a" * 64 + ".com/",  # label over 63
    "http://256.1.1.1/",
]
LOOPBACK = [  # refused in prod; allowed by the embedded profile's default 127.0.0.0/8
    "http://127.0.0.1/notify",
    "http://127.0.0.1:9000/paygrid/notify",
    "http://127.255.255.254:22/",
    "http://localhost/notify",
    "http://localhost:22/",
    "http://LOCALHOST/",
    "http://localhost./",
    "http://merchant.localhost:8080/n",
]
PUBLIC = [
    "https://merchant.example.com/paygrid/notify",
    "http://merchant.example.com:8080/notify?shop=1&x=%20y",
    "https://商户.中国/notify",  # IDN
    "https://xn--czr041a.xn--fiqs8s/notify",
    "http://8.8.8.8/notify",
    "http://1.1.1.1:8443/",
    "http://[2606:4700:4700::1111]/notify",
    "https://example.com",
    "https://example.com/notify#frag",
    "HTTPS://EXAMPLE.COM/notify",
    "http://127.0.0.1.nip.io/",  # a DNS name: vetted when resolved, at delivery
    "http://0x7f000001.example.com/",
]


@pytest.mark.parametrize("allowed", [PROD, EMBEDDED], ids=["prod", "embedded"])
@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused(url: str, allowed: tuple[object, ...]) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, allowed)  # type: ignore[arg-type]
    assert refused.value.reason == "address_not_allowed"
    assert "notify_url" in refused.value.message


@pytest.mark.parametrize("allowed", [PROD, EMBEDDED], ids=["prod", "embedded"])
@pytest.mark.parametrize("url", NON_CANONICAL)
def test_non_canonical_address_forms_are_refused(url: str, allowed: tuple[object, ...]) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, allowed)  # type: ignore[arg-type]
    assert refused.value.reason == "invalid_url"


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_and_credential_bearing_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, EMBEDDED)
    assert refused.value.reason in ("invalid_url", "address_not_allowed")


def test_credentials_are_named_in_the_message() -> None:
    with pytest.raises(UrlRefused, match="user name or password"):
        check_url("https://user:pw@merchant.example.com/notify", PROD)


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_only_where_allowed(url: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        check_url(url, PROD)
    assert refused.value.reason == "address_not_allowed"
    target = check_url(url, EMBEDDED)
    assert target.address is not None and target.address.is_loopback


@pytest.mark.parametrize("allowed", [PROD, EMBEDDED], ids=["prod", "embedded"])
@pytest.mark.parametrize("url", PUBLIC)
def test_merchants_public_urls_are_accepted(url: str, allowed: tuple[object, ...]) -> None:
    target = check_url(url, allowed)  # type: ignore[arg-type]
    assert target.scheme in ("http", "https")
    assert target.target.startswith("/")
    assert "#" not in target.target


def test_target_is_split_for_a_pinned_connection() -> None:
    t = check_url("https://商户.中国:8443/n?a=1#f", PROD)
    assert (t.scheme, t.host, t.port, t.target) == (
        "https",
        "xn--czr041a.xn--fiqs8s",
        8443,
        "/n?a=1",
    )
    assert t.address is None and not t.host_is_address
    assert t.host_header == "xn--czr041a.xn--fiqs8s:8443"
    assert t.url_for(IPv4Address("93.184.215.14")) == "https://93.184.215.14:8443/n?a=1"
    assert t.url_for(IPv6Address("2606:2800::1")) == "https://[2606:2800::1]:8443/n?a=1"
    v6 = check_url("http://[2606:4700:4700::1111]/", PROD)
    assert v6.host_is_address and v6.host_header == "[2606:4700:4700::1111]"
    assert check_url("http://example.com", PROD).host_header == "example.com"


def test_the_allow_list_is_the_only_exception() -> None:
    lab = parse_networks("10.20.0.0/16, fd12:3456::/32")
    assert check_url("http://10.20.1.2/notify", lab).address == ip_address("10.20.1.2")
    assert check_url("http://[fd12:3456::1]/", lab).address == ip_address("fd12:3456::1")
    for still_refused in ("http://10.21.0.1/", "http://127.0.0.1/", "http://169.254.169.254/"):
        with pytest.raises(UrlRefused):
            check_url(still_refused, lab)
    with pytest.raises(UrlRefused):  # an allowed network does not excuse an obfuscated form
        check_url("http://0x0a140102/", lab)


def test_every_blocked_network_is_refused_at_both_ends() -> None:
    for network in BLOCKED_NETWORKS:
        for address in (network.network_address, network.broadcast_address):
            assert not address_allowed(address, PROD), address
    assert address_allowed(ip_address("8.8.8.8"), PROD)
    assert address_allowed(ip_address("2606:4700:4700::1111"), PROD)


def test_resolved_ipv4_mapped_addresses_are_judged_by_their_ipv4() -> None:
    assert not address_allowed(ip_address("::ffff:10.0.0.1"), PROD)
    assert not address_allowed(ip_address("::ffff:127.0.0.1"), PROD)
    assert address_allowed(ip_address("::ffff:127.0.0.1"), EMBEDDED)


def test_parse_networks() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" , ") == ()
    assert [str(n) for n in parse_networks("127.0.0.0/8, ::1/128")] == ["127.0.0.0/8", "::1/128"]
    for bad in ("10.0.0.1/8", "nonsense", "300.0.0.0/8"):
        with pytest.raises(ValueError):
            parse_networks(bad)


def test_the_allow_list_setting_depends_on_the_profile(tmp_path: Path) -> None:
    assert config.resolve({}, {}).notify_allow_networks == "127.0.0.0/8"  # embedded: loopback
    assert config.resolve({"profile": "prod"}, {}).notify_allow_networks == ""  # prod: nothing
    file = tmp_path / "paygrid.toml"
    file.write_text('[paygrid]\nnotify_allow_networks = "10.20.0.0/16"\n')
    from_file = config.resolve({"config": file, "profile": "prod"}, {})
    assert from_file.notify_allow_networks == "10.20.0.0/16"
    env = {"PAYGRID_NOTIFY_ALLOW_NETWORKS": "192.168.7.0/24"}
    assert config.resolve({"config": file}, env).notify_allow_networks == "192.168.7.0/24"
    empty = {"PAYGRID_NOTIFY_ALLOW_NETWORKS": ""}  # set but empty: no exception at all
    assert config.resolve({}, empty).notify_allow_networks == ""
    assert parse_networks(config.resolve({}, empty).notify_allow_networks) == ()
    with pytest.raises(config.ConfigError, match="PAYGRID_NOTIFY_ALLOW_NETWORKS"):
        config.resolve({}, {"PAYGRID_NOTIFY_ALLOW_NETWORKS": "10.0.0.1/8"})
