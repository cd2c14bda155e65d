"""registrar.labels: registrator-style SERVICE_* labels/env → catalog registrations (pure)."""

from __future__ import annotations

import pytest

from registrar.labels import (
    ContainerInfo,
    ContainerPlan,
    PortMapping,
    RegistrarOptions,
    container_address,
    docker_health_status,
    owned_by,
    plan_services,
    service_attributes,
)

OPTIONS = RegistrarOptions(node="host1", engine_id="ENGINE:1")


def inspect_data(*, name="web-1", image="team/web:1.2", env=(), labels=None, ports=None, exposed=None,
                 networks=None, running=True, health=None, network_mode="default"):
    """A `docker inspect` document in the shape Docker 20.10 returns."""
    config = {"Image": image, "Env": list(env), "Labels": labels or {}, "ExposedPorts": exposed or {}}
    state = {"Running": running, "Status": "running" if running else "exited"}
    if health is not None:
        config["Healthcheck"] = {"Test": ["CMD-SHELL", "true"], "Interval": 1000000000}
        state["Health"] = {"Status": health, "FailingStreak": 0, "Log": []}
    return {
        "Id": "c0ffee" * 10 + "abcd",
        "Name": f"/{name}",
        "Config": config,
        "State": state,
        "HostConfig": {"NetworkMode": network_mode},
        "NetworkSettings": {
            "IPAddress": "",
            "Ports": ports or {},
            "Networks": {net: {"IPAddress": ip} for net, ip in (networks or {}).items()},
        },
    }


def container(**kwargs) -> ContainerInfo:
    return ContainerInfo.from_inspect(inspect_data(**kwargs))


def published(port: int, host_port: int, host_ip: str = "0.0.0.0", proto: str = "tcp") -> dict:
    return {f"{port}/{proto}": [{"HostIp": host_ip, "HostPort": str(host_port)}]}


def only_service(info: ContainerInfo, options: RegistrarOptions = OPTIONS):
    plan = plan_services(info, options)
    assert len(plan.services) == 1, plan
    return plan.services[0]


# --- reading docker inspect -------------------------------------------------------------------

def test_inspect_is_read_into_plain_facts():
    info = container(
        env=["PATH=/usr/bin", "SERVICE_NAME=shop", "EMPTY="],
        labels={"SERVICE_TAGS": "a,b"},
        ports={"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}, {"HostIp": "::", "HostPort": "49153"}],
               "9000/tcp": None},
        networks={"shop_default": "172.18.0.5", "unattached": ""},
        health="starting",
    )
    assert info.name == "web-1"
    assert info.env == {"PATH": "/usr/bin", "SERVICE_NAME": "shop", "EMPTY": ""}
    # The IPv6 twin of an IPv4 wildcard binding is the same published port, not a second service.
    assert info.ports == (PortMapping(8000, "tcp", "0.0.0.0", 49153), PortMapping(9000, "tcp"))
    assert info.networks == {"shop_default": "172.18.0.5"}
    assert info.health == "starting"


def test_paused_state_is_read():
    data = inspect_data()
    data["State"]["Paused"] = True
    assert ContainerInfo.from_inspect(data).paused and not container().paused


def test_healthcheck_none_means_no_docker_health():
    data = inspect_data()
    data["Config"]["Healthcheck"] = {"Test": ["NONE"]}
    assert ContainerInfo.from_inspect(data).health is None


# --- names, ids, addresses ---------------------------------------------------------------------

def test_published_port_gets_registrator_defaults():
    service = only_service(container(ports=published(8000, 49153)))
    assert service.name == "web"                      # image base name, tag dropped
    assert service.id == "host1:web-1:8000"           # node:container:port
    assert (service.address, service.port) == ("127.0.0.1", 49153)  # wildcard binding → --ip
    assert service.checks == ()


def test_a_specific_host_ip_is_kept():
    service = only_service(container(ports=published(8000, 49153, host_ip="127.0.0.7")))
    assert (service.address, service.port) == ("127.0.0.7", 49153)


def test_unpublished_ports_are_skipped_unless_internal():
    info = container(exposed={"8000/tcp": {}}, networks={"shop_net": "172.20.0.3"})
    plan = plan_services(info, OPTIONS)
    assert plan.services == () and "no published ports" in plan.skipped[0]
    service = only_service(info, RegistrarOptions(internal=True))
    assert (service.address, service.port) == ("172.20.0.3", 8000)


def test_internal_address_comes_from_the_named_compose_network():
    info = container(exposed={"8000/tcp": {}}, networks={"other_net": "10.1.0.2", "demo_shopgate": "172.21.0.9"})
    assert only_service(info, RegistrarOptions(internal=True, network="shopgate")).address == "172.21.0.9"
    assert only_service(info, RegistrarOptions(internal=True, network="demo_shopgate")).address == "172.21.0.9"
    # No preference: the first network by name, whatever order inspect lists them in.
    assert container_address(container(networks={"b_net": "10.1.0.2", "a_net": "10.2.0.2"}), None) == "10.2.0.2"


def test_internal_without_any_address_is_skipped_with_a_reason():
    plan = plan_services(container(exposed={"8000/tcp": {}}), RegistrarOptions(internal=True))
    assert plan.services == ()
    assert plan.skipped == ("container web-1 port 8000/tcp: no address on any network (internal mode)",)


def test_host_network_uses_exposed_ports_at_the_host_ip():
    info = container(exposed={"8000/tcp": {}}, network_mode="host")
    service = only_service(info, RegistrarOptions(host_ip="127.0.0.1"))
    assert (service.address, service.port) == ("127.0.0.1", 8000)


def test_several_ports_get_port_suffixed_names_and_per_port_overrides():
    info = container(
        ports={**published(80, 8081), **published(443, 8443)},
        env=["SERVICE_NAME=site", "SERVICE_443_NAME=site-tls"],
    )
    services = {s.port: s for s in plan_services(info, OPTIONS).services}
    assert services[8081].name == "site-80"
    assert services[8443].name == "site-tls"          # per-port name is used as given
    assert services[8443].id == "host1:web-1:443"


def test_service_id_override_stays_unique_across_ports():
    info = container(ports={**published(80, 8081), **published(81, 8082)}, labels={"SERVICE_ID": "fixed"})
    assert sorted(s.id for s in plan_services(info, OPTIONS).services) == ["fixed:80", "fixed:81"]
    assert only_service(container(ports=published(80, 8081), labels={"SERVICE_ID": "fixed"})).id == "fixed"


def test_udp_ports_get_a_udp_id():
    service = only_service(container(ports=published(53, 5353, proto="udp")))
    assert service.id == "host1:web-1:53:udp"


def test_not_running_containers_have_no_services():
    assert plan_services(container(ports=published(80, 8081), running=False), OPTIONS).services == ()


# --- attributes: env, labels, precedence, ignore, explicit ---------------------------------------

def test_labels_win_over_env_and_port_specific_wins_over_generic():
    info = container(
        env=["SERVICE_NAME=from-env", "SERVICE_TAGS=env", "SERVICE_8000_TAGS=port-env"],
        labels={"SERVICE_NAME": "from-label", "SERVICE_TAGS": "label"},
    )
    attrs, from_port = service_attributes(info, 8000)
    assert attrs == {"name": "from-label", "tags": "port-env"}
    assert from_port == {"tags"}
    # Attributes of other ports do not leak in.
    assert service_attributes(info, 9000)[0] == {"name": "from-label", "tags": "label"}


def test_tags_are_split_deduplicated_and_forced_tags_added():
    info = container(ports=published(8000, 49153), labels={"SERVICE_TAGS": "urlprefix-/web, v1,,v1"})
    service = only_service(info, RegistrarOptions(forced_tags=("docker", "v1")))
    assert service.tags == ("urlprefix-/web", "v1", "docker")


@pytest.mark.parametrize("value", ["true", "1", "yes", "anything"])
def test_service_ignore(value):
    plan = plan_services(container(ports=published(8000, 49153), labels={"SERVICE_IGNORE": value}), OPTIONS)
    assert plan.services == () and "SERVICE_IGNORE" in plan.skipped[0]


def test_service_ignore_false_does_not_ignore():
    only_service(container(ports=published(8000, 49153), labels={"SERVICE_IGNORE": "false"}))


def test_per_port_ignore_skips_only_that_port():
    info = container(ports={**published(80, 8081), **published(81, 8082)}, labels={"SERVICE_81_IGNORE": "1"})
    assert [s.port for s in plan_services(info, OPTIONS).services] == [8081]


def test_explicit_mode_needs_a_service_name():
    explicit = RegistrarOptions(explicit=True)
    # Containers that name no service are silently not ours (no log line for each of them).
    assert plan_services(container(ports=published(8000, 49153)), explicit) == ContainerPlan()
    named = container(ports=published(8000, 49153), labels={"SERVICE_NAME": "web"})
    assert only_service(named, explicit).name == "web"
    # A per-port name selects that port only; the other one is skipped with a reason.
    per_port = container(ports={**published(80, 8081), **published(81, 8082)}, env=["SERVICE_81_NAME=admin"])
    plan = plan_services(per_port, explicit)
    assert [(s.name, s.port) for s in plan.services] == [("admin", 8082)]
    assert "no SERVICE_NAME (explicit mode)" in plan.skipped[0]


def test_other_attributes_become_meta_with_ownership():
    info = container(ports=published(8000, 49153), labels={"SERVICE_REGION": "eu", "SERVICE_VERSION": "3"})
    service = only_service(info)
    assert service.meta["region"] == "eu" and service.meta["version"] == "3"
    assert owned_by(service.meta, "ENGINE:1")
    assert not owned_by(service.meta, "ENGINE:2")
    assert not owned_by({"version": "3"}, "ENGINE:1")


def test_bad_meta_key_is_refused_with_the_label_named():
    plan = plan_services(container(ports=published(8000, 49153), labels={"SERVICE_A.B": "x"}), OPTIONS)
    assert plan.services == () and "SERVICE_A.B" in plan.skipped[0]


# --- checks ------------------------------------------------------------------------------------

def test_http_check_targets_the_registered_address():
    info = container(ports=published(8000, 49153), labels={
        "SERVICE_CHECK_HTTP": "/health", "SERVICE_CHECK_INTERVAL": "2s", "SERVICE_CHECK_TIMEOUT": "500ms",
        "SERVICE_CHECK_DEREGISTER_AFTER": "30s", "SERVICE_CHECK_INITIAL_STATUS": "passing"})
    (check,) = only_service(info).checks
    assert check["http"] == "http://127.0.0.1:49153/health"
    assert (check["interval"], check["timeout"], check["DeregisterCriticalServiceAfter"]) == ("2s", "500ms", "30s")
    assert check["Status"] == "passing"
    assert check["CheckID"] == "service:host1:web-1:8000"


def test_https_tcp_and_ttl_checks():
    https = only_service(container(ports=published(8443, 1), labels={"SERVICE_CHECK_HTTPS": "/ok",
                                                                     "SERVICE_CHECK_TLS_SKIP_VERIFY": "true"}))
    assert https.checks[0]["http"] == "https://127.0.0.1:1/ok" and https.checks[0]["TLSSkipVerify"] is True
    tcp = only_service(container(ports=published(5432, 2), labels={"SERVICE_CHECK_TCP": "true"}))
    assert tcp.checks[0]["tcp"] == "127.0.0.1:2"
    ttl = only_service(container(ports=published(80, 3), labels={"SERVICE_CHECK_TTL": "30s"}))
    assert ttl.checks[0]["ttl"] == "30s"


def test_defaults_apply_when_only_the_check_is_given():
    options = RegistrarOptions(check_interval="7s", check_timeout="3s", deregister_after="2m")
    (check,) = only_service(container(ports=published(80, 3), labels={"SERVICE_CHECK_HTTP": "/"}), options).checks
    assert (check["interval"], check["timeout"], check["DeregisterCriticalServiceAfter"]) == ("7s", "3s", "2m")


@pytest.mark.parametrize("labels, message", [
    ({"SERVICE_CHECK_HTTP": "health"}, "SERVICE_CHECK_HTTP='health' must be a path starting with '/'"),
    ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INTERVAL": "often"}, "SERVICE_CHECK_INTERVAL='often' is not a duration"),
    ({"SERVICE_CHECK_TTL": "10"}, "SERVICE_CHECK_TTL='10' is not a duration"),
    ({"SERVICE_CHECK_HTTP": "/", "SERVICE_CHECK_INITIAL_STATUS": "ok"}, "must be one of passing, warning, critical"),
    ({"SERVICE_CHECK_SCRIPT": "curl localhost"}, "SERVICE_CHECK_SCRIPT is not supported"),
    ({"SERVICE_CHECK_CMD": "/bin/check"}, "SERVICE_CHECK_CMD is not supported"),
])
def test_bad_check_labels_skip_the_port_with_a_clear_reason(labels, message):
    plan = plan_services(container(ports=published(8000, 49153), labels=labels), OPTIONS)
    assert plan.services == ()
    assert plan.skipped[0].startswith("container web-1 port 8000/tcp: ")
    assert message in plan.skipped[0]


def test_docker_healthcheck_becomes_a_ttl_check_in_step_with_health():
    info = container(ports=published(8000, 49153), labels={"SERVICE_CHECK_HTTP": "/health"}, health="starting")
    service = only_service(info, RegistrarOptions(node="host1", health_ttl="20s"))
    http_check, docker_check = service.checks
    assert "http" in http_check
    assert service.health_check_id == "service:host1:web-1:8000:docker-health" == docker_check["CheckID"]
    assert docker_check["TTL"] == "20s" and docker_check["Status"] == "critical"
    kwargs = service.register_kwargs(health="healthy")
    assert kwargs["check"]["http"] == "http://127.0.0.1:49153/health"
    assert kwargs["extra_checks"][0]["Status"] == "passing"
    # register_kwargs does not change the planned service.
    assert service.checks[1]["Status"] == "critical"


@pytest.mark.parametrize("health, status", [("healthy", "passing"), ("unhealthy", "critical"),
                                            ("starting", "critical"), ("weird", "critical")])
def test_docker_health_to_check_status(health, status):
    assert docker_health_status(health) == status


def test_register_kwargs_without_checks():
    kwargs = only_service(container(ports=published(8000, 49153))).register_kwargs()
    assert kwargs["check"] is None and kwargs["extra_checks"] == []
    assert kwargs["service_id"] == "host1:web-1:8000" and kwargs["port"] == 49153


def test_service_env_becomes_the_env_meta_the_gateway_routes_by():
    from gateway.model import Instance
    from gateway.routing import instance_environment

    service = only_service(container(ports=published(8000, 49153), labels={"SERVICE_ENV": "staging"}))
    assert service.meta["env"] == "staging"
    instance = Instance("web", service.id, "node1", service.address, service.port, service.tags, tuple(sorted(service.meta.items())))
    assert instance_environment(instance) == ("staging", None)
