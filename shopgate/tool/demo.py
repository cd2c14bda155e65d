"""`shopgate demo`: the scripted scale demo, under steady load through the entry point, measured.

Under one continuous load (GETs across all five services and order POSTs), in order:

  1. scale products up to 6 instances
  2. SIGKILL one products instance — a crash: no drain, no deregistration
  3. scale products down to 1
  4. roll every users instance, one by one: start the new one, then stop the old one
  5. edit a haproxy.cfg template (the gateway re-renders and reloads HAProxy)
  6. change a KV setting, shopgate/services/products/balance = leastconn (another reload)
  7. a staging environment: KV gives it an entry port, a staging instance of products starts and is
     routed there only; requests on the staging port and the prod load count every answer given by
     the wrong environment (the floor: 0); then it stops and the key is put back
  8. sticky sessions: KV products/sticky = cookie; a cookie-jar client stays on one instance while
     products scales up by one (the floor: 0 moved); then the key is put back
  9. renew the HTTPS certificate: a new one from the local CA written to KV shopgate/tls/certs/localhost,
     served with no reload while a third of the load arrives over HTTPS (a new TLS handshake per request,
     verified against the local CA); the step fails if HAProxy reloaded

For each step the propagation is measured from the moment of the action: when the catalog showed
the change, and when the gateway routed to (or stopped routing to) the changed set. Every request
counts; the demo exits 1 if any failed. The SIGKILL hits a products instance: only idempotent GETs
reach products (from the load and from orders' own lookups), which HAProxy and the orders service
may safely retry elsewhere — a crash under a non-idempotent POST cannot be made invisible honestly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import requests

from shopgate import settings
from shopgate.consul_client import CatalogUnavailable
from shopgate.tool.chart import StepSpan, render_chart
from shopgate.tool.display import Progress, table
from gateway.routing import KV_ENVIRONMENTS, default_cookie
from gateway.status import status_key
from shopgate.processes import free_port
from shopgate.tool.lifecycle import prepare, scale, start_instance, start_stack, stop_records, stop_stack
from shopgate.tool.load import Load, RequestRecord, over_https, shop_mix, summarize
from shopgate.tool.local_tls import LOCAL_CERT_KEY, LOCAL_NAMES, ca_path, issue_local_certificate, leaf_der, put_local_certificate
from shopgate.tool.manifest import SERVICE_STOP_TIMEOUT, Manifest, ProcessRecord, StackError, ensure_alive, manifest_lock
from shopgate.tool.options import add_stack_arguments, ports_from_args, stop_on_sigterm
from shopgate.tool.probes import catalog_instances, gateway_status, passing_ports, routed_ports, served_certificate

STEP_TIMEOUT = 45.0
KV_BALANCE_KEY = f"{settings.KV_PREFIX}services/products/balance"
KV_STICKY_KEY = f"{settings.KV_PREFIX}services/products/sticky"
DEMO_ENVIRONMENT = "staging"
KV_STAGING_BIND_KEY = f"{KV_ENVIRONMENTS}{DEMO_ENVIRONMENT}/bind"
#: What the demo may change in KV; each is put back at the end.
DEMO_KV_KEYS = (KV_BALANCE_KEY, KV_STAGING_BIND_KEY, KV_STICKY_KEY)
DEMO_HEADER = "X-Shopgate-Demo"
#: The floors of the environment and sticky steps: each of these counts must stay 0.
FLOOR_CHECKS = ("staging requests failed", "answered by the wrong environment", "sticky requests failed", "sticky client moved")


class DemoError(Exception):
    """A step that did not complete: the demo stops and says which and why."""


# ---------------------------------------------------------------- watching the catalog and the gateway


@dataclass(frozen=True)
class Sample:
    """What the gateway routed to (and the catalog said) at one moment of the load's clock."""

    t: float
    routed: dict[str, frozenset[int]]
    passing: dict[str, frozenset[int]]   # catalog, for the services in focus
    reloads: int
    last_error: str | None


class Watcher:
    """Polls the controller's /status (and the catalog for the services in focus) ~10 times a second."""

    def __init__(self, manifest: Manifest, clock: Callable[[], float], interval: float = 0.1):
        self.manifest, self.clock, self.interval = manifest, clock, interval
        self.samples: list[Sample] = []
        self.focus: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(requests.RequestException, CatalogUnavailable, ValueError, KeyError):
                if (sample := self._sample()) is not None:
                    self.samples.append(sample)
            self._stop.wait(self.interval)

    def _sample(self) -> Sample | None:
        t = self.clock()
        status = gateway_status(self.manifest.ports)
        servers = [s for service in status.get("services", {}).values() for s in service.get("servers", [])]
        if any(s.get("haproxy_status") is None for s in servers):
            return None   # HAProxy's stats were unreadable for a moment (a reload): unknown, not "down"
        routed = {name: frozenset(routed_ports(status, name)) for name in status.get("services", {})}
        passing = {name: frozenset(passing_ports(self.manifest.ports.catalog_url, name)) for name in list(self.focus)}
        return Sample(t, routed, passing, int(status.get("reloads") or 0), status.get("last_error"))

    def wait_for(self, what: str, predicate: Callable[[Sample], bool], after: float, watch: list[ProcessRecord] = ()) -> float:
        """The load-clock time of the first sample at or after `after` where `predicate` holds, minus `after`."""
        deadline = time.monotonic() + STEP_TIMEOUT
        seen = 0
        while time.monotonic() < deadline:
            samples = self.samples
            for sample in samples[seen:]:
                if sample.t >= after and predicate(sample):
                    return sample.t - after
            seen = len(samples)
            try:
                ensure_alive(list(watch))
            except StackError as exc:
                raise DemoError(str(exc)) from None
            time.sleep(0.05)
        raise DemoError(f"{what}: not seen within {STEP_TIMEOUT:.0f}s")

    def reloads(self) -> int:
        """The gateway's reload count as last seen (the controller's own /status, asked now if need be)."""
        if self.samples:
            return self.samples[-1].reloads
        return int(gateway_status(self.manifest.ports).get("reloads") or 0)

    def timeline(self) -> list[tuple[float, dict[str, int]]]:
        return [(s.t, {name: len(ports) for name, ports in s.routed.items()}) for s in self.samples]


# ---------------------------------------------------------------- the steps


@dataclass
class Measure:
    """One propagation figure: seconds from the action until the catalog / the gateway showed `change`."""

    change: str
    catalog: float | None
    gateway: float


@dataclass
class StepResult:
    label: str
    started: float                       # load clock
    finished: float = 0.0
    measures: list[Measure] = field(default_factory=list)
    failed: int = 0                      # failed requests that started during this step
    https_requests: int = 0              # ... of which over HTTPS, and handshakes that failed
    failed_handshakes: int = 0
    notes: list[str] = field(default_factory=list)


class Demo:
    """The steps, acting on the stack through its manifest while the load runs."""

    def __init__(self, state_dir: Path, load: Load, watcher: Watcher, say: Callable[[str], None]):
        self.state_dir, self.load, self.watcher, self.say = state_dir, load, watcher, say
        self.steps: list[StepResult] = []
        self.killed: list[ProcessRecord] = []
        self.staged: list[ProcessRecord] = []     # instances of the staging step, stopped at the end whatever happens
        self.checks: dict[str, int] = {}          # the environment and sticky steps' counts (FLOOR_CHECKS must be 0)

    @property
    def manifest(self) -> Manifest:
        return Manifest.load(self.state_dir)

    def local(self, service: str, environment: str = settings.DEFAULT_ENVIRONMENT) -> list[ProcessRecord]:
        return [r for r in self.manifest.instances(service, environment) if r.running()]

    def begin(self, label: str) -> StepResult:
        step = StepResult(label, self.load.now())
        self.steps.append(step)
        self.say(f"step {len(self.steps)}: {label}")
        return step

    def measured(self, step: StepResult, m: Measure) -> None:
        step.measures.append(m)
        catalog = f"catalog +{m.catalog:.2f}s, " if m.catalog is not None else ""
        self.say(f"    ✓ {m.change}: {catalog}gateway +{m.gateway:.2f}s")

    def end(self, step: StepResult) -> None:
        step.finished = self.load.now()
        failed = sum(r.failed for r in list(self.load.records))
        self.say(f"    ({len(self.load.records)} requests so far, {failed} failed)")

    # -- membership

    def _start(self, service: str, count: int, environment: str = settings.DEFAULT_ENVIRONMENT) -> list[ProcessRecord]:
        with manifest_lock(self.state_dir):
            manifest = self.manifest
            return [start_instance(manifest, service, environment) for _ in range(count)]

    def _stop(self, leaving: list[ProcessRecord]) -> None:
        stop_records(leaving, SERVICE_STOP_TIMEOUT)
        self._forget(leaving)

    def _forget(self, gone: list[ProcessRecord]) -> None:
        with manifest_lock(self.state_dir):
            manifest = self.manifest
            manifest.processes = [p for p in manifest.processes if p not in gone]
            manifest.save()

    def _measure_in(self, service: str, new: list[ProcessRecord], since: float, change: str,
                    environment: str = settings.DEFAULT_ENVIRONMENT) -> Measure:
        ports, key = {r.port for r in new}, status_key(service, environment)
        catalog = self.watcher.wait_for(f"{change} (catalog)", lambda s: ports <= s.passing.get(service, frozenset()), since, new)
        gateway = self.watcher.wait_for(f"{change} (gateway)", lambda s: ports <= s.routed.get(key, frozenset()), since, new)
        return Measure(change, catalog, gateway)

    def _measure_out(self, service: str, gone: list[ProcessRecord], since: float, change: str,
                     environment: str = settings.DEFAULT_ENVIRONMENT) -> Measure:
        ports, key = {r.port for r in gone}, status_key(service, environment)
        catalog = self.watcher.wait_for(f"{change} (catalog)", lambda s: not ports & s.passing.get(service, frozenset()), since)
        gateway = self.watcher.wait_for(f"{change} (gateway)", lambda s: not ports & s.routed.get(key, frozenset()), since)
        return Measure(change, catalog, gateway)

    def scale_up(self, service: str, count: int) -> None:
        before = len(self.local(service))
        step = self.begin(f"scale {service} {before} → {count}")
        self.watcher.focus.add(service)
        new = self._start(service, count - before)
        self.measured(step, self._measure_in(service, new, step.started, f"{len(new)} new instances routed"))
        self.end(step)

    def scale_down(self, service: str, count: int) -> None:
        alive = self.local(service)
        step = self.begin(f"scale {service} {len(alive)} → {count}")
        self.watcher.focus.add(service)
        leaving = alive[count:]
        self._stop(leaving)
        self.measured(step, self._measure_out(service, leaving, step.started, f"{len(leaving)} drained instances out"))
        self.end(step)

    def kill_one(self, service: str) -> None:
        alive = self.local(service)
        if len(alive) < 2:
            raise DemoError(f"SIGKILL step: {service} needs 2 instances or more so that one is left to serve")
        victim = alive[-1]
        step = self.begin(f"SIGKILL {victim.name} (no deregistration)")
        self.watcher.focus.add(service)
        os.killpg(victim.pid, signal.SIGKILL)
        self.killed.append(victim)
        self._forget([victim])
        self.measured(step, self._measure_out(service, [victim], step.started, "killed instance out"))
        self.end(step)

    def roll(self, service: str) -> None:
        """Replace each instance: start the new one, wait until routed; SIGTERM the old one, wait until not routed."""
        old = self.local(service)
        step = self.begin(f"roll {service} ({len(old)} instances, one by one)")
        self.watcher.focus.add(service)
        for record in old:
            since = self.load.now()
            new = self._start(service, 1)
            self.measured(step, self._measure_in(service, new, since, f"{new[0].name} routed"))
            since = self.load.now()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGTERM)   # it drains and deregisters; its exit is awaited below
            self.measured(step, self._measure_out(service, [record], since, f"{record.name} out"))
        self._stop(old)
        self.end(step)

    # -- configuration

    def _measure_reload(self, step: StepResult, change: str, before: int, since: float | None = None) -> None:
        """From `since` (the step's start unless given) until the gateway's next reload."""
        gateway = self.watcher.wait_for(f"{change} (reload)", lambda s: s.reloads > before, step.started if since is None else since)
        error = gateway_status(self.manifest.ports).get("last_error")
        if error:
            raise DemoError(f"{change}: the gateway reports an error: {error}")
        self.measured(step, Measure(change, None, gateway))

    def edit_template(self, templates: Path) -> None:
        edit = TemplateEdit.plan(templates)
        step = self.begin(f"edit template {edit.path.name}: {edit.what}")
        before = self.watcher.reloads()
        edit.path.write_text(edit.edited)
        self._measure_reload(step, "HAProxy reloaded with the edit", before)
        if edit.header:
            wait_until(f"responses carrying {DEMO_HEADER}", lambda: DEMO_HEADER in requests.get(
                f"{self.manifest.ports.entry_url}/api/v1/products", timeout=3).headers)
            self.measured(step, Measure(f"responses carry {DEMO_HEADER}", None, self.load.now() - step.started))
        self.end(step)

    def _put_kv(self, step: StepResult, consul_url: str, key: str, value: bytes | str | None, change: str) -> None:
        """Write (None: delete) a KV key the gateway renders, and measure the reload it makes."""
        before, since = self.watcher.reloads(), self.load.now()
        url = f"{consul_url}/v1/kv/{key}"
        (requests.put(url, data=value, timeout=5) if value is not None else requests.delete(url, timeout=5)).raise_for_status()
        self._measure_reload(step, change, before, since)

    def stop_staged(self) -> None:
        """The staging step's instances, whatever became of the step."""
        self._stop([r for r in self.staged if r.running()])

    def count(self, check: str, value: int) -> None:
        self.checks[check] = self.checks.get(check, 0) + value

    def staging(self, consul_url: str, requests_count: int) -> None:
        """A staging instance of products on its own entry point: it never answers prod, prod never answers it."""
        service, env = "products", DEMO_ENVIRONMENT
        port = self.manifest.environments.get(env)   # a stack started with `up --env staging=PORT` has it already
        step = self.begin(f"{env} environment: one {service} instance on its own entry point")
        self.watcher.focus.add(service)
        if port is None:
            port = free_port()
            self._put_kv(step, consul_url, KV_STAGING_BIND_KEY, f"{settings.LOOPBACK}:{port}", f"HAProxy reloaded with a {env} frontend on :{port}")
        since = self.load.now()
        new = self._start(service, 1, env)
        self.staged += new
        self.measured(step, self._measure_in(service, new, since, f"{new[0].name} routed on :{port} only", env))
        ours = {f"{service}-{r.port}" for r in self.local(service, env)}   # X-Instance is the instance id <service>-<port>
        answers, failed = probe(f"http://{settings.LOOPBACK}:{port}/api/v1/{service}", requests_count)
        wrong_there = sum(1 for instance in answers if instance not in ours)
        self.say(f"    {len(answers) + failed} requests on :{port}: {failed} failed, {wrong_there} answered by another environment")
        since = self.load.now()
        self._stop(new)
        self.measured(step, self._measure_out(service, new, since, f"{new[0].name} out", env))
        if port not in self.manifest.environments.values():
            self._put_kv(step, consul_url, KV_STAGING_BIND_KEY, None, f"HAProxy reloaded without the {env} frontend")
        wrong_here = sum(1 for r in list(self.load.records) if r.started >= step.started and r.instance in ours)
        self.say(f"    prod load during the step: {wrong_here} requests answered by {env}")
        self.count("staging requests", len(answers) + failed)
        self.count("staging requests failed", failed)
        self.count("answered by the wrong environment", wrong_there + wrong_here)
        self.end(step)

    def sticky(self, consul_url: str, requests_count: int) -> None:
        """KV sticky = cookie on products; a cookie-jar client keeps its instance while products scales up by one."""
        service = "products"
        before = len(self.local(service))
        step = self.begin(f"sticky {service} (cookie), scale {service} {before} → {before + 1}")
        self.watcher.focus.add(service)
        saved = kv_value(consul_url, KV_STICKY_KEY)
        if saved != b"cookie":
            self._put_kv(step, consul_url, KV_STICKY_KEY, "cookie", "HAProxy reloaded with a sticky cookie")
        url = f"{self.manifest.ports.entry_url}/api/v1/{service}"
        with requests.Session() as client:
            wait_until(f"a {default_cookie(service)} cookie", lambda: default_cookie(service) in client.get(url, timeout=3).cookies)
            home = client.get(url, timeout=5).headers["X-Instance"]
            answers, failed = probe(url, requests_count // 2, client)
            since = self.load.now()
            new = self._start(service, 1)
            self.measured(step, self._measure_in(service, new, since, f"{new[0].name} routed"))
            later, later_failed = probe(url, requests_count - requests_count // 2, client)
        answers, failed = answers + later, failed + later_failed
        moved = sum(1 for instance in answers if instance != home)
        fresh, fresh_failed = probe(url, 10)   # new clients: the balancer still spreads them
        self.count("sticky requests", len(answers) + failed)
        self.count("sticky requests failed", failed + fresh_failed)
        self.count("sticky client moved", moved)
        self.count("instances 10 new clients reached", len(set(fresh)))
        self.say(f"    cookie-jar client: {len(answers) + failed} requests, {failed} failed, {moved} answered by another instance than {home}; "
                 f"10 clients without a cookie reached {len(set(fresh))} instances")
        if saved != b"cookie":
            self._put_kv(step, consul_url, KV_STICKY_KEY, saved, "HAProxy reloaded with the sticky key put back")
        self.end(step)

    def set_balance(self, consul_url: str) -> None:
        """A KV change that must reload: leastconn, or back to roundrobin where leastconn is already set."""
        value = "roundrobin" if kv_value(consul_url, KV_BALANCE_KEY) == b"leastconn" else "leastconn"
        step = self.begin(f"KV {KV_BALANCE_KEY} = {value}")
        self._put_kv(step, consul_url, KV_BALANCE_KEY, value, f"HAProxy reloaded with balance {value}")
        self.end(step)

    # -- certificates

    def rotate_certificate(self) -> None:
        """A renewed localhost certificate (same CA) into KV under HTTPS load: served, and no reload."""
        ports = self.manifest.ports
        step = self.begin(f"renew the HTTPS certificate in KV {LOCAL_CERT_KEY}")
        before = int(gateway_status(ports).get("reloads") or 0)
        bundle = issue_local_certificate(self.state_dir)
        put_local_certificate(ports.catalog_url, bundle)
        wait_until("the renewed certificate served", lambda: served_certificate(ports.https, LOCAL_NAMES[0]) == leaf_der(bundle))
        self.measured(step, Measure(f"renewed certificate served for {LOCAL_NAMES[0]}", None, self.load.now() - step.started))
        time.sleep(1.0)   # HTTPS load on the renewed certificate, before the reload count is read again
        after = int(gateway_status(ports).get("reloads") or 0)
        if after != before:
            raise DemoError(f"the certificate renewal reloaded HAProxy ({before} → {after} reloads)")
        step.notes.append(f"reloads unchanged ({before} → {after})")
        self.say(f"    ✓ reloads unchanged ({before} → {after})")
        self.end(step)


@dataclass(frozen=True)
class TemplateEdit:
    """The template step's change: a response header added to the entry frontend, visible from outside.

    Templates without the stock frontend partial get a comment line in haproxy.cfg.j2 instead
    (still a new rendered config, so still a reload).
    """

    path: Path
    original: str
    edited: str
    what: str
    header: bool

    @classmethod
    def plan(cls, templates: Path) -> "TemplateEdit":
        frontend = templates / "frontend.cfg.j2"
        if frontend.exists():
            text = frontend.read_text()
            lines = text.splitlines(keepends=True)
            bind = next((i for i, line in enumerate(lines) if line.strip().startswith("bind ")), None)
            if bind is not None:
                lines.insert(bind + 1, f"    http-response set-header {DEMO_HEADER} template-edited\n")
                return cls(frontend, text, "".join(lines), f"add response header {DEMO_HEADER}", True)
        main = templates / "haproxy.cfg.j2"
        if not main.exists():
            raise DemoError(f"{templates}: neither frontend.cfg.j2 nor haproxy.cfg.j2 to edit")
        text = main.read_text()
        return cls(main, text, text + "# edited by `shopgate demo`\n", "add a comment", False)


def probe(url: str, count: int, session: requests.Session | None = None) -> tuple[list[str], int]:
    """`count` GETs, each on a new connection (`session` keeps only its cookies; without one, every
    request is a new client): the X-Instance of every 200 answer, and how many got none."""
    answers, failed = [], 0
    get = session.get if session is not None else requests.get   # without a session: no cookie is kept
    for _ in range(count):
        try:
            response = get(url, headers={"Connection": "close"}, timeout=10)
            if response.status_code == 200 and response.headers.get("X-Instance"):
                answers.append(response.headers["X-Instance"])
            else:
                failed += 1
        except requests.RequestException:
            failed += 1
    return answers, failed


def wait_until(what: str, holds: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> None:
    """Poll `holds` until it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if holds():
                return
        time.sleep(0.05)
    raise DemoError(f"{what}: not seen within {timeout:.0f}s")


# ---------------------------------------------------------------- running it


@dataclass(frozen=True)
class Plan:
    """How big the demo is: `--short` for the test suite, the full one for people."""

    rate: float
    peak: int             # products scale up to this
    low: int              # ... and down to this
    pause: float          # seconds of plain load before, between and after the steps
    probes: int           # requests of the staging step's client, and of the sticky step's


FULL = Plan(rate=60, peak=6, low=1, pause=2.0, probes=100)
SHORT = Plan(rate=30, peak=4, low=1, pause=1.0, probes=40)


def run_steps(demo: Demo, plan: Plan, templates: Path) -> None:
    consul_url = demo.manifest.ports.catalog_url

    def pause() -> None:   # plain load between the steps, so that each one stands apart in the chart
        time.sleep(plan.pause)

    pause()
    demo.scale_up("products", plan.peak)
    pause()
    demo.kill_one("products")
    pause()
    demo.scale_down("products", plan.low)
    pause()
    demo.roll("users")
    pause()
    demo.edit_template(templates)
    pause()
    demo.set_balance(consul_url)
    pause()
    demo.staging(consul_url, plan.probes)
    pause()
    demo.sticky(consul_url, plan.probes)
    pause()
    demo.rotate_certificate()
    pause()


@dataclass
class Restore:
    """What the demo changes and puts back afterwards (products only in a stack it did not start)."""

    products: int | None
    template: Path | None = None
    template_text: str | None = None
    kv: dict[str, bytes | None] = field(default_factory=dict)   # DEMO_KV_KEYS as they were (None: absent)

    @classmethod
    def taken(cls, catalog_url: str, products: int | None = None, template: Path | None = None,
              template_text: str | None = None) -> "Restore":
        return cls(products, template, template_text, {key: kv_value(catalog_url, key) for key in DEMO_KV_KEYS})


def deregister_killed(state_dir: Path, killed: list[ProcessRecord]) -> None:
    """The operator's clean-up after a crash: a SIGKILLed instance never deregistered itself."""
    manifest = Manifest.load(state_dir)
    if manifest is None:
        return
    catalog_url = manifest.ports.catalog_url
    with contextlib.suppress(requests.RequestException, CatalogUnavailable):
        for victim in killed:
            for entry in catalog_instances(catalog_url, victim.service):
                if entry.port == victim.port:
                    requests.put(f"{catalog_url}/v1/agent/service/deregister/{entry.id}", timeout=5)


def restore(state_dir: Path, saved: Restore, say: Callable[[str], None]) -> None:
    manifest = Manifest.load(state_dir)
    if manifest is None:
        return
    catalog_url = manifest.ports.catalog_url
    if saved.template is not None and saved.template_text is not None:
        saved.template.write_text(saved.template_text)
    with contextlib.suppress(requests.RequestException):
        for key, value in saved.kv.items():
            if kv_value(catalog_url, key) == value:
                continue
            if value is None:
                requests.delete(f"{catalog_url}/v1/kv/{key}", timeout=5)
            else:
                requests.put(f"{catalog_url}/v1/kv/{key}", data=value, timeout=5)
    with manifest_lock(state_dir):
        manifest = Manifest.load(state_dir)
        if saved.products is not None and manifest is not None \
                and len([r for r in manifest.instances("products") if r.running()]) != saved.products:
            say(f"restoring products to {saved.products} instances")
            with contextlib.redirect_stdout(sys.stderr):
                scale(manifest, "products", saved.products, Progress(sys.stderr))


def kv_value(catalog_url: str, key: str) -> bytes | None:
    response = requests.get(f"{catalog_url}/v1/kv/{key}?raw", timeout=5)
    return response.content if response.status_code == 200 else None


def format_report(report: dict) -> str:
    load = report["load"]
    lines = [
        "",
        f"shopgate demo — {len(report['steps'])} steps under {report['rate']:.0f} req/s for {report['duration']:.1f}s "
        f"(load generator: {report['load_generator']})",
        "",
        f"  requests {load['requests']} ({load['https_requests']} over HTTPS)   failed {load['failed']}   "
        f"failed handshakes {load['failed_handshakes']}   p50 {load['p50_ms']} ms   p99 {load['p99_ms']} ms   max {load['max_ms']} ms",
        "  answers  " + ", ".join(f"{k}: {v}" for k, v in load["statuses"].items()),
        "",
    ]
    header = ("STEP", "AT", "CHANGE", "CATALOG", "GATEWAY", "FAILED")
    rows = []
    for number, step in enumerate(report["steps"], 1):
        for index, m in enumerate(step["measures"] or [{"change": "—", "catalog": None, "gateway": None}]):
            first = index == 0
            rows.append((
                f"{number}. {step['label']}" if first else "", f"{step['started']:.1f}s" if first else "", m["change"],
                "—" if m["catalog"] is None else f"+{m['catalog']:.2f}s",
                "—" if m["gateway"] is None else f"+{m['gateway']:.2f}s",
                str(step["failed"]) if first else ""))
    lines += ["  " + line for line in table(header, rows)]
    lines += [f"  step {number}: {note}; {step['https_requests']} HTTPS requests, {step['failed_handshakes']} failed handshakes"
              for number, step in enumerate(report["steps"], 1) for note in step["notes"]]
    if report["checks"]:
        lines += ["", "  " + ", ".join(f"{name} {count}" for name, count in report["checks"].items())]
    if load["first_failures"]:
        lines += ["", "  first failed requests:"] + [f"    {f}" for f in load["first_failures"]]
    if report.get("error"):
        lines += ["", f"  the demo stopped early: {report['error']}"]
    if report.get("chart"):
        lines += ["", f"  chart: {report['chart']}"]
    lines += ["", "  result: " + ("0 failed requests" if report["ok"] else "FAILED")]
    return "\n".join(lines)


def build_report(demo: Demo, records: list[RequestRecord], plan: Plan, error: str | None, chart: Path | None) -> dict:
    steps = demo.steps
    for index, step in enumerate(steps):
        end = steps[index + 1].started if index + 1 < len(steps) else float("inf")
        during = [r for r in records if step.started <= r.started < end]
        step.failed = sum(r.failed for r in during)
        step.https_requests = sum(r.tls for r in during)
        step.failed_handshakes = sum(r.failed_handshake for r in during)
    load = summarize(records)
    return {
        "ok": load["failed"] == 0 and error is None and not any(demo.checks.get(check) for check in FLOOR_CHECKS),
        "checks": demo.checks,
        "error": error,
        "rate": plan.rate,
        "duration": round(max((r.started for r in records), default=0.0), 1),
        "load_generator": "shopgate.tool.load (asyncio + aiohttp, one connection per request; every 3rd over HTTPS)",
        "load": load,
        "steps": [asdict(s) for s in steps],
        "chart": str(chart) if chart else None,
    }


def run_demo(state_dir: Path, plan: Plan, chart: Path | None, templates: Path, saved: Restore | None,
             say: Callable[[str], None]) -> dict:
    manifest = Manifest.load(state_dir)
    base_url, https_url = manifest.ports.entry_url, manifest.ports.https_entry_url
    trust = ssl.create_default_context(cafile=str(ca_path(state_dir)))
    load = Load(base_url, over_https(shop_mix(base_url), https_url), rate=plan.rate, concurrency=32, duration=3600, ssl_context=trust)
    say(f"steady load: {plan.rate:.0f} req/s through {base_url}, every 3rd through {https_url} "
        f"(GETs on all five services + order POSTs; HTTPS verified against the local CA)")
    load.start()
    watcher = Watcher(manifest, load.now).start()
    demo = Demo(state_dir, load, watcher, say)
    error = None
    try:
        run_steps(demo, plan, templates)
    except (DemoError, StackError) as exc:
        error = str(exc)
        say(f"step failed: {error}")
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        records = load.stop()
        watcher.stop()
        deregister_killed(state_dir, demo.killed)
        demo.stop_staged()
        if saved is not None:
            restore(state_dir, saved, say)
    path = None
    if chart is not None:
        spans = [StepSpan(s.label, s.started, s.finished or s.started) for s in demo.steps]
        path = render_chart(chart, records, watcher.timeline(), spans,
                            f"shopgate demo — {len(records)} requests, {sum(r.failed for r in records)} failed")
    return build_report(demo, records, plan, error, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shopgate demo", description="Scripted scale demo under steady load, measured.")
    add_stack_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    parser.add_argument("--chart", type=Path, default=settings.PROJECT_ROOT / "artifacts" / "demo.png", help="PNG chart (default: %(default)s)")
    parser.add_argument("--short", action="store_true", help="a smaller, quicker demo (for the test suite)")
    parser.add_argument("--rate", type=float, help="requests per second of the steady load")
    args = parser.parse_args(argv)
    plan = SHORT if args.short else FULL
    if args.rate:
        plan = Plan(args.rate, plan.peak, plan.low, plan.pause, plan.probes)
    out = sys.stderr if args.json else sys.stdout
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=out, flush=True)

    state_dir = args.state_dir.resolve()
    existing = Manifest.load(state_dir)
    owned = existing is None or not existing.running()
    stop_on_sigterm()
    try:
        if owned:
            say(f"no stack runs in {state_dir}: starting one (stopped again at the end)")
            copy = state_dir / "templates"
            state_dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(args.templates, copy)
            manifest = prepare(state_dir, ports_from_args(args), copy, supervised=True)
            with contextlib.redirect_stdout(out):
                start_stack(manifest, args.instances, Progress(out))
            # The catalog keeps its data in the state dir: the KV keys are put back, the stack itself is stopped.
            templates, saved = copy, Restore.taken(manifest.ports.catalog_url)
        else:
            say(f"using the stack running in {state_dir}")
            templates = Path(existing.templates)
            edit = TemplateEdit.plan(templates)
            saved = Restore.taken(existing.ports.catalog_url, len([r for r in existing.instances("products") if r.running()]),
                                  edit.path, edit.original)
            say(f"(the template step edits {edit.path}; it is restored at the end, as are products and the KV keys)")
        report = run_demo(state_dir, plan, args.chart, templates, saved, say)
    except (StackError, DemoError, RuntimeError, requests.RequestException) as exc:
        print(f"shopgate demo: {exc}", file=sys.stderr)
        report = None
    except KeyboardInterrupt:
        report = None
    finally:
        if owned and Manifest.load(state_dir) is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            stop_stack(Manifest.load(state_dir), out)
    if report is None:
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1
