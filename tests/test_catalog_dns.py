"""The catalog's DNS interface, asked by real clients: `dig` (bind9-dnsutils) and dnspython, over UDP and TCP."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from catalog_helpers import Api
from conftest import CatalogProcess

DIG = shutil.which("dig")
needs_dig = pytest.mark.skipif(DIG is None, reason="dig is not installed (Debian package bind9-dnsutils; `make test` installs it)")


class Dns:
    """Questions to one catalog's DNS port."""

    def __init__(self, port: int):
        self.port = port

    def ask(self, name: str, rdtype: str = "A", tcp: bool = False, edns: int | None = 4096) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=edns is not None, payload=edns or 512)
        send = dns.query.tcp if tcp else dns.query.udp
        return send(query, "127.0.0.1", port=self.port, timeout=5, ignore_trailing=False)

    def records(self, name: str, rdtype: str = "A", **kwargs) -> list[str]:
        answer = self.ask(name, rdtype, **kwargs)
        assert answer.rcode() == dns.rcode.NOERROR, f"{name} {rdtype}: {dns.rcode.to_text(answer.rcode())}"
        return sorted(rr.to_text() for rrset in answer.answer for rr in rrset)

    def dig(self, *args: str) -> str:
        done = subprocess.run([DIG, "@127.0.0.1", "-p", str(self.port), "+time=3", "+tries=1", *args],
                              capture_output=True, text=True, timeout=30)
        return done.stdout


def register(api: Api, name: str, service_id: str, port: int, address: str = "", tags: tuple[str, ...] = (),
             status: str = "passing") -> None:
    api.put("/v1/agent/service/register", json={
        "Name": name, "ID": service_id, "Port": port, "Address": address, "Tags": list(tags),
        "Check": {"TTL": "1h", "Status": status}})


@pytest.fixture
def catalogs(tmp_path):
    """Make catalogs, each with its own data dir and log; all stopped at teardown."""
    made: list[CatalogProcess] = []

    def make(name: str, *args: str, dns_port: int | None = None, start: bool = True) -> CatalogProcess:
        (tmp_path / name).mkdir()
        catalog = CatalogProcess(tmp_path / name / "data", tmp_path / name, extra_args=("--node", name, *args))
        catalog.dns_port = dns_port or catalog.dns_port
        made.append(catalog)
        return catalog.start() if start else catalog

    yield make
    for catalog in made:
        catalog.stop()


def log_of(catalog: CatalogProcess) -> str:
    return (catalog.log_dir / "catalog.log").read_text()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """One catalog: products ×3 with their own addresses and tags, users ×1 on the node's address."""
    root = tmp_path_factory.mktemp("dns")
    catalog = CatalogProcess(root / "data", root, extra_args=("--node", "node-a", "--dns-service-ttl", "7"))
    catalog.start()
    try:
        api = Api(catalog.url)
        for n in (1, 2, 3):
            register(api, "products", f"products-{n}", 9000 + n, f"127.0.0.{n}", ("v1" if n < 3 else "v2", "web"))
        register(api, "users", "users-1", 7000)
        yield catalog, api, Dns(catalog.dns_port)
    finally:
        catalog.stop()


def test_service_a_records_are_the_instances_addresses_from_the_http_api(shop):
    catalog, api, ask = shop
    assert ask.records("products.service.consul") == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    http = sorted(e["Service"]["Address"] for e in api.get("/v1/health/service/products"))
    assert http == ask.records("products.service.dc1.consul")
    assert ask.records("users.service.consul") == ["127.0.0.1"]  # no service address: the node's
    assert ask.records("PRODUCTS.Service.Consul") == ask.records("products.service.consul")
    assert ask.ask("products.service.consul").answer[0].ttl == 7  # --dns-service-ttl


def test_srv_records_carry_ports_and_targets_with_addresses_in_additional(shop):
    _, _, ask = shop
    answer = ask.ask("products.service.consul", "SRV")
    srv = sorted((rr.port, rr.target.to_text()) for rr in answer.answer[0])
    assert srv == [(9001, "7f000001.addr.dc1.consul."), (9002, "7f000002.addr.dc1.consul."),
                   (9003, "7f000003.addr.dc1.consul.")]
    glue = sorted((rrset.name.to_text(), rr.address) for rrset in answer.additional for rr in rrset)
    assert glue == [("7f000001.addr.dc1.consul.", "127.0.0.1"), ("7f000002.addr.dc1.consul.", "127.0.0.2"),
                    ("7f000003.addr.dc1.consul.", "127.0.0.3")]
    users = ask.ask("users.service.consul", "SRV")
    assert [(rr.port, rr.target.to_text()) for rr in users.answer[0]] == [(7000, "node-a.node.dc1.consul.")]
    assert [rr.address for rrset in users.additional for rr in rrset] == ["127.0.0.1"]
    assert ask.records("7f000002.addr.dc1.consul") == ["127.0.0.2"]


def test_tags_filter_in_both_name_forms(shop):
    _, _, ask = shop
    assert ask.records("v1.products.service.consul") == ["127.0.0.1", "127.0.0.2"]
    assert ask.records("v2.products.service.dc1.consul") == ["127.0.0.3"]
    assert [r.split()[2] for r in ask.records("_products._v2.service.consul", "SRV")] == ["9003"]
    # RFC 2782 with `_tcp`: no tag filter
    assert len(ask.records("_products._tcp.service.consul", "SRV")) == 3
    assert len(ask.records("_products._tcp.service.dc1.consul", "SRV")) == 3
    assert ask.ask("v9.products.service.consul").rcode() == dns.rcode.NXDOMAIN


def test_node_names_apex_and_unknown_names(shop):
    _, _, ask = shop
    assert ask.records("node-a.node.consul") == ["127.0.0.1"]
    assert ask.records("node-a.node.dc1.consul") == ["127.0.0.1"]
    assert ask.records("consul.", "NS") == ["node-a.node.dc1.consul."]
    soa = ask.ask("consul.", "SOA").answer[0][0]
    assert (soa.mname.to_text(), soa.rname.to_text()) == ("ns.consul.", "hostmaster.consul.")
    for unknown in ("nothing.service.consul", "nobody.node.consul", "products.service.dc9.consul", "what.consul"):
        answer = ask.ask(unknown)
        assert answer.rcode() == dns.rcode.NXDOMAIN, unknown
        assert [rrset.rdtype for rrset in answer.authority] == [dns.rdatatype.SOA], unknown
        assert answer.flags & dns.flags.AA
    assert ask.ask("example.com").rcode() == dns.rcode.REFUSED
    # a name that exists, a type it has none of: NOERROR, no answer, the SOA in authority
    empty = ask.ask("products.service.consul", "AAAA")
    assert (empty.rcode(), empty.answer, len(empty.authority)) == (dns.rcode.NOERROR, [], 1)


def test_answers_are_shuffled_per_query(shop):
    _, _, ask = shop
    orders = {tuple(rr.address for rr in ask.ask("products.service.consul").answer[0]) for _ in range(30)}
    assert len(orders) > 1
    assert all(sorted(order) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"] for order in orders)


@needs_dig
def test_dig_answers_every_name_form(shop):
    _, _, ask = shop
    assert sorted(ask.dig("+short", "products.service.consul").split()) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert sorted(ask.dig("+short", "v1.products.service.dc1.consul").split()) == ["127.0.0.1", "127.0.0.2"]
    srv = ask.dig("+short", "_products._v2.service.consul", "SRV").split()
    assert srv == ["1", "1", "9003", "7f000003.addr.dc1.consul."]
    full = ask.dig("+noall", "+answer", "+additional", "users.service.consul", "SRV")
    assert "7000 node-a.node.dc1.consul." in full and "node-a.node.dc1.consul.\t7\tIN\tA\t127.0.0.1" in full
    assert ask.dig("+short", "node-a.node.consul").split() == ["127.0.0.1"]
    assert "status: NXDOMAIN" in ask.dig("missing.service.consul")
    assert "status: REFUSED" in ask.dig("www.example.com")
    assert "hostmaster.consul." in ask.dig("+short", "consul.", "SOA")


def test_health_rules_critical_maintenance_warning(catalogs):
    catalog = catalogs("node-h")
    strict = catalogs("node-s", "--dns-only-passing")
    for each in (catalog, strict):
        api = Api(each.url)
        for n, status in ((1, "passing"), (2, "warning"), (3, "critical"), (4, "passing")):
            register(api, "orders", f"orders-{n}", 8000 + n, f"127.0.1.{n}", status=status)
        api.put("/v1/agent/service/maintenance/orders-4", params={"enable": "true", "reason": "test"})
    assert Dns(catalog.dns_port).records("orders.service.consul") == ["127.0.1.1", "127.0.1.2"]
    assert Dns(strict.dns_port).records("orders.service.consul") == ["127.0.1.1"]

    api, ask = Api(catalog.url), Dns(catalog.dns_port)
    api.put("/v1/agent/check/fail/service:orders-1")
    api.put("/v1/agent/check/fail/service:orders-2")
    answer = ask.ask("orders.service.consul")  # a service without a healthy instance: not found
    assert answer.rcode() == dns.rcode.NXDOMAIN and answer.authority
    api.put("/v1/agent/service/maintenance/orders-4", params={"enable": "false"})
    assert ask.records("orders.service.consul") == ["127.0.1.4"]  # the same store as the HTTP API: at once


@pytest.fixture
def crowd(catalogs):
    """40 instances of one service: more than a 512-byte UDP answer holds."""
    catalog = catalogs("node-c")
    api = Api(catalog.url)
    for n in range(40):
        register(api, "crowd", f"crowd-{n}", 10000 + n, f"127.0.2.{n + 1}")
    return catalog, Dns(catalog.dns_port)


def test_udp_without_edns_sets_tc_and_tcp_carries_all(crowd):
    _, ask = crowd
    small = ask.ask("crowd.service.consul", "SRV", edns=None)
    assert small.flags & dns.flags.TC
    assert 0 < len(small.answer[0]) < 40
    assert len(small.to_wire()) <= 512
    kept = {rr.target for rr in small.answer[0]}
    assert {rrset.name for rrset in small.additional} <= kept  # glue only for the records kept
    big = ask.ask("crowd.service.consul", "SRV", edns=8192)
    assert not big.flags & dns.flags.TC and len(big.answer[0]) == 40 and len(big.additional) == 40
    tcp = ask.ask("crowd.service.consul", "SRV", edns=None, tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 40
    assert len(ask.records("crowd.service.consul", "A", edns=None, tcp=True)) == 40


@needs_dig
def test_dig_sees_truncation_and_retries_over_tcp(crowd):
    _, ask = crowd
    truncated = ask.dig("+noedns", "+ignore", "crowd.service.consul", "SRV")
    assert "flags: qr aa tc" in truncated
    assert ask.dig("+noedns", "+short", "+tcp", "crowd.service.consul", "SRV").count("addr.dc1.consul.") == 40
    # dig's default: retry over TCP on TC, as a good client does
    assert ask.dig("+noedns", "+short", "crowd.service.consul", "SRV").count("addr.dc1.consul.") == 40


def test_malformed_packets_are_dropped_counted_and_survived(catalogs):
    catalog = catalogs("node-m")
    register(Api(catalog.url), "web", "web-1", 80, "127.0.3.1")
    ask = Dns(catalog.dns_port)
    response = dns.message.make_response(dns.message.make_query("web.service.consul", "A")).to_wire()
    junk = [b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\x00" * 3 + b"\x01" + b"\xc0\x0c" * 40, response]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.5)
        for packet in junk:
            udp.sendto(packet, ("127.0.0.1", catalog.dns_port))
        with pytest.raises(socket.timeout):  # nothing is answered
            udp.recv(4096)
    with socket.create_connection(("127.0.0.1", catalog.dns_port), timeout=5) as tcp:
        tcp.sendall(struct.pack("!H", 5) + b"\x01\x02\x03\x04\x05")
        assert tcp.recv(4096) == b""  # the connection is closed, the server goes on
    assert ask.records("web.service.consul") == ["127.0.3.1"]
    assert ask.records("web.service.consul", tcp=True) == ["127.0.3.1"]
    catalog.stop()
    assert "6 malformed packets dropped" in log_of(catalog)


def test_dns_port_taken_is_a_clear_error_and_minus_one_turns_dns_off(catalogs):
    first = catalogs("node-1")
    clash = catalogs("node-2", dns_port=first.dns_port, start=False)
    with pytest.raises(Exception):
        clash.start()
    assert f"cannot serve DNS on 127.0.0.1:{first.dns_port}" in log_of(clash) and "--dns-port -1" in log_of(clash)
    off = catalogs("node-3", "--dns-port", "-1")
    assert Api(off.url).get("/v1/agent/self")["Config"]["NodeName"] == "node-3"
    assert "DNS on" not in log_of(off)
