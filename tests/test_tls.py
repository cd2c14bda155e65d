"""gateway.tls (pure): which PEM bundles become certificates, why the others do not, and the plan's certificate changes."""

from __future__ import annotations

import datetime
import time

import pytest
from hypothesis import given, settings, strategies as st

from gateway.diff import certificate_changes
from gateway.haproxy_syntax import TOKEN
from gateway.tls import BadCertificate, certificate_entry, certificates, crt_list_line
from gateway.tls_store import CertificateStore
from shopgate.certs import issue, make_ca

CA = make_ca("unit CA")
NOW = time.time()
KEY = "shopgate/tls/certs/"


def test_a_good_bundle_names_its_sans_and_keeps_no_key_in_its_repr():
    bundle = issue(CA, ("shop.test", "*.api.shop.test", "127.0.0.1"))
    entry = certificate_entry("kv-shop", KEY + "shop", bundle, None, NOW)
    assert entry.sni == ("shop.test", "*.api.shop.test")
    assert entry.sans == ("shop.test", "*.api.shop.test", "127.0.0.1")
    assert entry.not_before < NOW < entry.not_after
    assert "PRIVATE" not in repr(entry) and "PRIVATE" not in str(entry.summary(NOW, 14))
    assert entry.pem.count(b"BEGIN CERTIFICATE") == 2 and b"\n\n" not in entry.pem   # leaf + issuer, payload-safe
    assert crt_list_line("/state/tls", entry) == "/state/tls/kv-shop.pem shop.test *.api.shop.test"


def test_sni_narrowing_must_stay_inside_the_san():
    bundle = issue(CA, ("shop.test", "*.api.shop.test"))
    kv = {KEY + "shop": bundle, "shopgate/tls/sni/shop": b"v1.api.shop.test, shop.test"}
    (entry,), rejected = certificates(kv, {}, NOW)
    assert entry.sni == ("v1.api.shop.test", "shop.test") and rejected == ()
    kv["shopgate/tls/sni/shop"] = b"evil.test"
    assert certificates(kv, {}, NOW) == ((), ("shopgate/tls/certs/shop: SNI narrowing: evil.test is not covered by the certificate's SAN (shop.test, *.api.shop.test)",))
    kv["shopgate/tls/sni/shop"] = b"a.b.api.shop.test"   # a wildcard covers one label only
    assert certificates(kv, {}, NOW)[0] == ()
    assert certificates({"shopgate/tls/sni/ghost": b"x.test"}, {}, NOW) == ((), ("shopgate/tls/sni/ghost: no certificate shopgate/tls/certs/ghost to narrow",))


def test_an_expiring_certificate_is_flagged():
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)
    entry = certificate_entry("kv-x", KEY + "x", issue(CA, ("x.test",), not_after=soon), None, NOW)
    assert entry.summary(NOW, 14)["expiring"] and not entry.summary(NOW, 2)["expiring"]


def test_a_certificate_that_expires_while_serving_is_dropped_not_kept():
    bundle = issue(CA, ("x.test",))
    (entry,), _ = certificates({KEY + "x": bundle}, {}, NOW)
    later = entry.not_after + 1
    assert certificates({KEY + "x": bundle}, {}, later, previous=(entry,))[0] == ()


def test_a_bad_renewal_keeps_the_serving_certificate_and_says_so():
    (entry,), _ = certificates({KEY + "x": issue(CA, ("x.test",))}, {}, NOW)
    kept, rejected = certificates({KEY + "x": b"garbage"}, {}, NOW, previous=(entry,))
    assert kept == (entry,)
    assert rejected == ("shopgate/tls/certs/x: no PEM certificate in it (expected the certificate, its chain and the key); the previous certificate keeps serving",)


@pytest.mark.parametrize("name", ["bad name", "../etc", ".hidden", "x" * 64])
def test_a_certificate_name_must_be_a_plain_file_name(name):
    entries, (reason,) = certificates({KEY + name: issue(CA, ("x.test",))}, {}, NOW)
    assert entries == () and "must be 1-63 of" in reason


def test_ip_only_san_cannot_be_selected_by_sni():
    with pytest.raises(BadCertificate, match="no DNS name"):
        certificate_entry("kv-ip", KEY + "ip", issue(CA, ("127.0.0.1",)), None, NOW)


def test_files_and_kv_get_distinct_ids():
    bundle = issue(CA, ("x.test",))
    entries, _ = certificates({KEY + "x": bundle}, {"/certs/x.pem": bundle}, NOW)
    assert [(e.id, e.source) for e in entries] == [("kv-x", KEY + "x"), ("file-x", "/certs/x.pem")]


def test_certificate_changes_remove_first_then_add_and_update():
    a, b, c = (certificate_entry(f"kv-{n}", KEY + n, issue(CA, (f"{n}.test",)), None, NOW) for n in "abc")
    a2 = certificate_entry("kv-a", KEY + "a", issue(CA, ("a.test",)), None, NOW)
    a3 = certificate_entry("kv-a", KEY + "a", issue(CA, ("a.test", "www.a.test")), None, NOW)
    assert certificate_changes((a, b), (a, b)) == ()
    changes = certificate_changes((a, b), (a2, c))
    assert [(ch.action, ch.entry.id, ch.sni_changed) for ch in changes] == [("remove", "kv-b", False), ("update", "kv-a", False), ("add", "kv-c", False)]
    assert [(ch.action, ch.sni_changed) for ch in certificate_changes((a,), (a3,))] == [("update", True)]


@settings(max_examples=200, deadline=None)
@given(sni=st.text(max_size=60), name=st.text(max_size=20), data=st.binary(max_size=40))
def test_no_kv_input_puts_anything_but_plain_words_into_the_crt_list(sni, name, data):
    bundle = issue(CA, ("shop.test", "*.shop.test")) if not data else data
    entries, rejected = certificates({KEY + name: bundle, f"shopgate/tls/sni/{name}": sni.encode()}, {}, NOW)
    for entry in entries:
        assert all(TOKEN.fullmatch(word) for word in crt_list_line("/state/tls", entry).split(" "))
    assert all("\n" not in reason and "\r" not in reason for reason in rejected)


def test_a_new_store_on_the_same_directory_takes_back_what_the_files_hold(tmp_path):
    """What a restarted controller starts from (gateway.tls_store): the certificates the crt-list serves,
    equal to the catalog's entries for them (so the first view changes nothing), and nothing unreadable."""
    narrowed = certificates({KEY + "shop": issue(CA, ("shop.test", "www.shop.test")), "shopgate/tls/sni/shop": b"www.shop.test"},
                            {"/certs/files.pem": issue(CA, ("files.test",))}, NOW)[0]
    store = CertificateStore(tmp_path / "tls")
    assert store.prepare() == ()
    store.write(narrowed)
    crt_list = (tmp_path / "tls" / "crt-list").read_text()
    assert CertificateStore(tmp_path / "tls").prepare() == narrowed
    assert certificate_changes(narrowed, CertificateStore(tmp_path / "tls").prepare()) == ()
    assert (tmp_path / "tls" / "crt-list").read_text() == crt_list
    (tmp_path / "tls" / "file-files.pem").write_bytes(b"not a PEM")
    assert CertificateStore(tmp_path / "tls").prepare() == narrowed[:1]
    assert "file-files" not in (tmp_path / "tls" / "crt-list").read_text(), "the crt-list is rewritten to what is taken back"
    (tmp_path / "tls" / "held.json").write_text('[{"id": "kv-../x", "source": "s", "sni": ["a.test"]}]')
    assert CertificateStore(tmp_path / "tls").prepare() == ()
