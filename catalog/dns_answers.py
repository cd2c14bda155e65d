"""Consul's DNS interface as a pure function: a query's wire bytes and the store in, the answer's bytes out.

No sockets and no clock (the shuffle takes its random source): `catalog.dns` carries the bytes over UDP
and TCP. Answers come from the same `Store` as `/v1/health/service`, and an instance's health is decided
by the one rule every client uses (`aggregate_status`: maintenance, else the worst check, an unknown
status counts as critical). dnspython does the wire format. Names and rules are Consul's:

- `[<tag>.]<service>.service[.<dc>].consul` and RFC 2782 `_<service>._<tag>.service[.<dc>].consul`
  (`_tcp` as the tag: no tag filter): A/AAAA of healthy instances (service address, else node address);
  SRV with the port, the target `<hex-ip>.addr.<dc>.consul` when the instance registered its own
  address, else `<node>.node.<dc>.consul`, and the target's A/AAAA in ADDITIONAL;
- `<node>.node[.<dc>].consul` and `<hex-ip>.addr[.<dc>].consul`: the address;
- `consul.`: SOA and NS; an unknown name (or a service without healthy instances): NXDOMAIN with the
  SOA in AUTHORITY; a name outside `consul.`: REFUSED (there are no recursors).
- UDP answers fit the size the client advertises in EDNS0 (512 without): records that do not fit are
  left out and the TC bit says so (Consul's `enable_truncate`), so a client can ask again over TCP.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from catalog.state import Store
from shopgate.consul_client.health import aggregate_status
from shopgate.consul_client.protocol import PASSING, WARNING
from shopgate.settings import DNS_DOMAIN, DNS_NODE_TTL, DNS_SERVICE_TTL

IN = dns.rdataclass.IN
UDP_DEFAULT_SIZE = 512          # RFC 1035: a UDP answer without EDNS0
SERVER_PAYLOAD = 65535 - 40     # what this server accepts and advertises in EDNS0 (a UDP datagram's room)
SOA_TIMERS = (3600, 600, 86400)  # refresh, retry, expire (Consul's); the minimum is the node TTL


class Malformed(Exception):
    """Bytes that are not a DNS query: dropped without an answer (and counted by the transport)."""


@dataclass(frozen=True)
class DnsConfig:
    """What shapes the answers (Consul's `dns_config`)."""

    datacenter: str
    node_name: str                  # the catalog's own node: the name server in NS and SOA
    service_ttl: int = DNS_SERVICE_TTL
    node_ttl: int = DNS_NODE_TTL
    only_passing: bool = False
    domain: str = DNS_DOMAIN


@dataclass(frozen=True)
class Record:
    name: dns.name.Name
    ttl: int
    rdata: dns.rdata.Rdata


@dataclass(frozen=True)
class Answer:
    """What a query gets, before it is fitted to a transport. ADDITIONAL holds the addresses of SRV and NS
    targets, so that a truncated answer keeps only the glue of the records it keeps."""

    rcode: int = dns.rcode.NOERROR
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()


def respond(store: Store, config: DnsConfig, wire: bytes, udp: bool, rng: random.Random) -> bytes:
    """The answer to one query in wire format; `Malformed` for bytes that are not a query."""
    try:
        query = dns.message.from_wire(wire)
    except (dns.exception.DNSException, ValueError, IndexError) as exc:
        raise Malformed(f"not a DNS message: {exc}") from None
    if query.flags & dns.flags.QR:
        raise Malformed("a response, not a query")
    if query.opcode() != dns.opcode.QUERY:
        answer = Answer(rcode=dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        answer = Answer(rcode=dns.rcode.FORMERR)
    else:
        question = query.question[0]
        answer = resolve(store, config, question.name, question.rdtype, rng)
    limit = max(UDP_DEFAULT_SIZE, query.payload if query.edns >= 0 else 0) if udp else 65535
    return encode(query, answer, limit)


def resolve(store: Store, config: DnsConfig, qname: dns.name.Name, qtype: int, rng: random.Random) -> Answer:
    """The records for one question (pure; the order of instances comes from `rng`)."""
    domain = dns.name.from_text(config.domain)
    if not qname.is_subdomain(domain):
        return Answer(rcode=dns.rcode.REFUSED)
    labels = [label.decode("ascii", "replace").lower() for label in qname.relativize(domain).labels]
    if labels == ["@"] or not labels:
        return apex(config, domain, qtype, store)
    if len(labels) >= 2 and labels[-1] == config.datacenter.lower() and labels[-2] in ("service", "node", "addr"):
        labels = labels[:-1]
    kind, rest = labels[-1], labels[:-1]
    found: Answer | None = None
    if kind == "service" and rest:
        found = service_answer(store, config, domain, qname, qtype, rest, rng)
    elif kind == "node" and len(rest) == 1:
        found = node_answer(store, config, qname, qtype, rest[0])
    elif kind == "addr" and len(rest) == 1:
        found = addr_answer(config, qname, qtype, rest[0])
    return found if found is not None else not_found(config, domain, store)


def service_answer(store: Store, config: DnsConfig, domain: dns.name.Name, qname: dns.name.Name, qtype: int,
                   rest: list[str], rng: random.Random) -> Answer | None:
    if len(rest) == 2 and rest[0].startswith("_") and rest[1].startswith("_"):     # RFC 2782
        name, tag = rest[0][1:], (None if rest[1] == "_tcp" else rest[1][1:])
    elif len(rest) == 1:
        name, tag = rest[0], None
    elif len(rest) == 2:
        tag, name = rest
    else:
        return None
    healthy = healthy_instances(store, config, name, tag)
    if not healthy:
        return None
    rng.shuffle(healthy)
    answer, additional = [], []
    dc = dns.name.from_text(config.datacenter, domain)
    for service, address, status in healthy:
        if qtype == dns.rdatatype.SRV:
            if service.address and ip_of(service.address) is not None:
                target = dns.name.from_text(ip_of(service.address).packed.hex(), dns.name.from_text("addr", dc))
            else:
                target = dns.name.from_text(service.node, dns.name.from_text("node", dc))
            weight = service.weights.get("Warning" if status == WARNING else "Passing", 1)
            answer.append(Record(qname, config.service_ttl, SRV(IN, dns.rdatatype.SRV, 1, weight, service.port, target)))
            additional.extend(address_records(target, config.service_ttl, address, dns.rdatatype.ANY))
        else:
            answer.extend(address_records(qname, config.service_ttl, address, qtype))
    if not answer:  # the name exists, with no record of this type: NOERROR, no data, SOA in authority
        return Answer(authority=(soa(config, domain, store),))
    return Answer(answer=tuple(answer), additional=tuple(additional))


def healthy_instances(store: Store, config: DnsConfig, name: str, tag: str | None) -> list[tuple]:
    """(service, address, status) of the instances DNS hands out: passing, and warning unless only_passing."""
    keep = (PASSING,) if config.only_passing else (PASSING, WARNING)
    found = []
    for service in store.service_instances(store.service_name_folded(name)):
        if tag is not None and tag not in (t.lower() for t in service.tags):
            continue
        status = aggregate_status((c.check_id, c.status) for c in store.checks_of(service.node, service.id))
        if status in keep:
            found.append((service, service.address or store.nodes[service.node].address, status))
    return found


def node_answer(store: Store, config: DnsConfig, qname: dns.name.Name, qtype: int, name: str) -> Answer | None:
    node = store.node_folded(name)
    if node is None:
        return None
    return Answer(answer=tuple(address_records(qname, config.node_ttl, node.address, qtype)))


def addr_answer(config: DnsConfig, qname: dns.name.Name, qtype: int, label: str) -> Answer | None:
    """`7f000001.addr.dc1.consul`: the address written in hex (what SRV targets of services with their own
    address point at)."""
    if len(label) not in (8, 32):
        return None
    try:
        address = ipaddress.ip_address(bytes.fromhex(label))
    except ValueError:
        return None
    return Answer(answer=tuple(address_records(qname, config.node_ttl, str(address), qtype)))


def apex(config: DnsConfig, domain: dns.name.Name, qtype: int, store: Store) -> Answer:
    """`consul.` itself: its SOA and its one name server (this node), with the server's address as glue."""
    ns_name = dns.name.from_text(config.node_name, dns.name.from_text(f"node.{config.datacenter}", domain))
    records = []
    if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
        records.append(soa(config, domain, store))
    if qtype in (dns.rdatatype.NS, dns.rdatatype.ANY):
        records.append(Record(domain, config.node_ttl, NS(IN, dns.rdatatype.NS, ns_name)))
    if not records:
        return Answer(authority=(soa(config, domain, store),))
    node = store.node_folded(config.node_name)
    glue = address_records(ns_name, config.node_ttl, node.address, dns.rdatatype.ANY) if node else []
    return Answer(answer=tuple(records), additional=tuple(glue))


def not_found(config: DnsConfig, domain: dns.name.Name, store: Store) -> Answer:
    return Answer(rcode=dns.rcode.NXDOMAIN, authority=(soa(config, domain, store),))


def soa(config: DnsConfig, domain: dns.name.Name, store: Store) -> Record:
    serial = store.index % 2**32
    rdata = SOA(IN, dns.rdatatype.SOA, dns.name.from_text("ns", domain), dns.name.from_text("hostmaster", domain),
                serial, *SOA_TIMERS, config.node_ttl)
    return Record(domain, config.node_ttl, rdata)


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def address_records(name: dns.name.Name, ttl: int, address: str, qtype: int) -> list[Record]:
    """A for an IPv4 address, AAAA for IPv6, when the question asks for that type (ANY: either).
    An address that is not an IP (a host name) gets no record."""
    ip = ip_of(address)
    if isinstance(ip, ipaddress.IPv4Address) and qtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        return [Record(name, ttl, A(IN, dns.rdatatype.A, str(ip)))]
    if isinstance(ip, ipaddress.IPv6Address) and qtype in (dns.rdatatype.AAAA, dns.rdatatype.ANY):
        return [Record(name, ttl, AAAA(IN, dns.rdatatype.AAAA, str(ip)))]
    return []


def encode(query: dns.message.Message, answer: Answer, limit: int) -> bytes:
    """The answer in at most `limit` bytes: all of it when it fits, else as many ANSWER records as fit (with
    the glue of the SRV targets kept) and the TC bit set."""
    def build(count: int) -> dns.message.Message:
        response = dns.message.make_response(query, our_payload=SERVER_PAYLOAD)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        response.set_rcode(answer.rcode)
        kept = answer.answer[:count]
        targets = {r.rdata.target for r in kept if isinstance(r.rdata, (SRV, NS))}
        glue = [r for r in answer.additional if r.name in targets]
        for section, records in ((response.answer, kept), (response.authority, answer.authority),
                                 (response.additional, glue)):
            for record in records:
                rrset = response.find_rrset(section, record.name, IN, record.rdata.rdtype, create=True)
                rrset.add(record.rdata, record.ttl)
        if count < len(answer.answer):
            response.flags |= dns.flags.TC
        return response

    def wire(count: int) -> bytes | None:
        try:
            return build(count).to_wire(max_size=limit)
        except dns.exception.TooBig:
            return None

    whole = wire(len(answer.answer))
    if whole is not None:
        return whole
    low, high, best = 0, len(answer.answer) - 1, None
    while low <= high:  # the most records that fit
        middle = (low + high) // 2
        fitted = wire(middle)
        if fitted is None:
            high = middle - 1
        else:
            best, low = fitted, middle + 1
    return best if best is not None else build(0).to_wire()
