"""The controller's Prometheus metrics, in a registry of their own (several controllers may share a process in tests)."""

from __future__ import annotations

import time

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

#: Propagation buckets: the floor is p99 <= 500 ms, a runtime change takes a few ms.
PROPAGATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


class GatewayMetrics:
    """Counters the controller updates; `/metrics` renders `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.propagation = Histogram(
            "shopgate_gateway_propagation_seconds",
            "From a catalog/KV change seen by the watcher to HAProxy running it",
            ["kind"], buckets=PROPAGATION_BUCKETS, registry=r)
        self.reloads = Counter("shopgate_gateway_reloads_total", "HAProxy reloads that succeeded", registry=r)
        self.runtime_updates = Counter("shopgate_gateway_runtime_updates_total", "Server slot changes applied through the runtime API", registry=r)
        self.rejected_configs = Counter("shopgate_gateway_rejected_configs_total", "Rendered configs refused (render error, haproxy -c, failed reload)", registry=r)
        self.errors = Counter("shopgate_gateway_errors_total", "Errors by stage", ["stage"], registry=r)
        self.haproxy_restarts = Counter("shopgate_gateway_haproxy_restarts_total", "HAProxy restarted after it died", registry=r)
        self.services_rebuilt = Counter("shopgate_gateway_services_rebuilt_total",
                                        "Services whose part of the route table was built afresh (a change to one service adds 1)", registry=r)
        self.log_rotations = Counter("shopgate_gateway_log_rotations_total", "Rotations of <state-dir>/haproxy.log (copy-then-truncate)", registry=r)
        self.guard_holds = Counter("shopgate_gateway_guard_holds_total", "Catalog views held back by the empty-catalog guard", registry=r)
        self.long_polls = Gauge("shopgate_gateway_long_polls", "Blocking catalog queries in flight", registry=r)
        self.last_good_config_age = Gauge("shopgate_gateway_last_good_config_age_seconds", "Age of the config HAProxy runs", registry=r)
        self.certificate_updates = Counter("shopgate_gateway_certificate_updates_total",
                                           "Certificate changes through the runtime API, by result (applied, rejected by HAProxy)", ["result"], registry=r)
        self.certificates_rejected = Gauge("shopgate_gateway_certificates_rejected", "Certificates skipped by validation now (bad PEM, key, dates, SAN)", registry=r)
        self.certificate_expiry = Gauge("shopgate_gateway_certificate_expiry_seconds", "Seconds until a served certificate expires", ["name"], registry=r)
        self.last_good_at: float | None = None
        self.last_good_config_age.set_function(lambda: time.time() - self.last_good_at if self.last_good_at else float("nan"))

    def watch_config_hash(self, config_hash: Callable[[], str | None]) -> None:
        """`shopgate_gateway_config_info{hash="..."} 1`: the fleet hash of what HAProxy serves, read at each scrape."""
        self.registry.register(_ConfigHashCollector(config_hash))


class _ConfigHashCollector:
    def __init__(self, config_hash: Callable[[], str | None]):
        self.config_hash = config_hash

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("shopgate_gateway_config_info", "Hash of the configuration HAProxy serves (equal on gateways that route alike)", labels=["hash"])
        value = self.config_hash()
        if value is not None:
            family.add_metric([value], 1)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("shopgate_gateway_config_info", "Hash of the configuration HAProxy serves", labels=["hash"])
