"""Catalog services for a container, read from its registrator-style SERVICE_* labels and env (pure).

The rules are registrator's, so that existing containers keep working:

- one service per port: published ports (`HostIp:HostPort`), or with `internal` the exposed port
  at the container's address on its network;
- `SERVICE_NAME`, `SERVICE_TAGS`, `SERVICE_ID`, `SERVICE_IGNORE`, `SERVICE_CHECK_*` and any other
  `SERVICE_<KEY>` (which becomes service meta), from env and labels — labels win;
- `SERVICE_<port>_<KEY>` applies to one port and wins over `SERVICE_<KEY>`;
- `SERVICE_ENV=staging` becomes meta `env`, as does `SERVICE_TAGS=env=staging` the tag: the gateway
  routes the instance to that environment's frontend only (it validates the name);
- default name: the image's base name, plus `-<port>` when the container has several ports;
- default id: `<node>:<container name>:<port>[:udp]`.

Beyond registrator: a container's Docker HEALTHCHECK becomes a TTL check that the registrar keeps
in step with the health status, and every registration carries meta naming the engine and the
container, so that registrations whose container is gone can be found and removed.

Bad input (a check path without `/`, an unknown check status, a bad duration) never registers a
half-right service: the port is skipped with a reason that names the container and the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from consul import Check

from registrar.registration import parse_tags, service_register_kwargs
from shopgate import settings
from shopgate.consul_client.protocol import CRITICAL, PASSING, STATUSES

PREFIX = "SERVICE_"

#: Meta keys the registrar owns on every registration it makes.
META_REGISTRAR = "registrar"
META_ENGINE = "docker_engine"
META_CONTAINER = "container_id"
META_CONTAINER_NAME = "container_name"
REGISTRAR_NAME = "shopgate-docker"

#: Attributes with a meaning; every other SERVICE_<KEY> is copied into the service meta.
CHECK_ATTRS = frozenset({
    "check_http", "check_https", "check_tcp", "check_ttl", "check_script", "check_cmd",
    "check_interval", "check_timeout", "check_initial_status", "check_deregister_after",
    "check_tls_skip_verify",
})
RESERVED_ATTRS = frozenset({"name", "id", "tags", "ignore"}) | CHECK_ATTRS

DOCKER_HEALTH_TO_STATUS = {"healthy": PASSING, "unhealthy": CRITICAL, "starting": CRITICAL}
FALSE_WORDS = ("", "0", "false", "no", "off")

_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PORT_ATTR = re.compile(r"^(\d+)_(.+)$")


class LabelError(ValueError):
    """A SERVICE_* label or env value that cannot be used as given."""


@dataclass(frozen=True)
class PortMapping:
    """One container port and, when published, where on the host."""

    port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int | None = None

    @property
    def published(self) -> bool:
        return self.host_port is not None


@dataclass(frozen=True)
class ContainerInfo:
    """What the registrar needs from `docker inspect`, as plain data."""

    id: str
    name: str
    image: str
    running: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortMapping, ...] = ()
    networks: Mapping[str, str] = field(default_factory=dict)  # network name -> container IP
    network_mode: str = "default"
    health: str | None = None  # None: no HEALTHCHECK; else starting / healthy / unhealthy
    paused: bool = False

    @classmethod
    def from_inspect(cls, data: Mapping[str, Any]) -> "ContainerInfo":
        config = data.get("Config") or {}
        state = data.get("State") or {}
        net = data.get("NetworkSettings") or {}
        host_config = data.get("HostConfig") or {}
        env = {}
        for item in config.get("Env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        health_test = (config.get("Healthcheck") or {}).get("Test") or []
        has_health = bool(health_test) and health_test[0] != "NONE"
        health = ((state.get("Health") or {}).get("Status") or "starting") if has_health else None
        networks = {name: (info or {}).get("IPAddress") or "" for name, info in (net.get("Networks") or {}).items()}
        return cls(
            id=data["Id"],
            name=(data.get("Name") or data["Id"][:12]).lstrip("/"),
            image=config.get("Image") or "",
            running=bool(state.get("Running")),
            env=env,
            labels=dict(config.get("Labels") or {}),
            ports=_port_mappings(net.get("Ports") or {}, config.get("ExposedPorts") or {}),
            networks={name: ip for name, ip in networks.items() if ip},
            network_mode=host_config.get("NetworkMode") or "default",
            health=health,
            paused=bool(state.get("Paused")),
        )


def _port_mappings(published: Mapping[str, Any], exposed: Mapping[str, Any]) -> tuple[PortMapping, ...]:
    """One mapping per (container port, host binding); unpublished exposed ports once, without host."""
    mappings: list[PortMapping] = []
    for key in sorted(set(published) | set(exposed), key=_port_sort_key):
        port_text, _, protocol = key.partition("/")
        port, protocol = int(port_text), protocol or "tcp"
        bindings = published.get(key) or []
        seen: set[tuple[str, int]] = set()
        for binding in bindings:
            host_port = int(binding.get("HostPort") or 0)
            host_ip = binding.get("HostIp") or ""
            if host_port and (host_ip, host_port) not in seen and not (host_ip == "::" and ("0.0.0.0", host_port) in seen):
                seen.add((host_ip, host_port))
                mappings.append(PortMapping(port, protocol, host_ip, host_port))
        if not seen:
            mappings.append(PortMapping(port, protocol))
    return tuple(mappings)


def _port_sort_key(key: str) -> tuple[int, str]:
    port, _, protocol = key.partition("/")
    return int(port), protocol


@dataclass(frozen=True)
class RegistrarOptions:
    """How containers become services (the registrar's command-line flags)."""

    internal: bool = False               # register exposed ports at the container address
    explicit: bool = False               # only containers that set SERVICE_NAME
    host_ip: str = settings.LOOPBACK     # address for ports published on 0.0.0.0 / ::
    network: str | None = None           # preferred network for internal addresses
    forced_tags: tuple[str, ...] = ()    # added to every service
    node: str = "docker"                 # first part of default service ids
    engine_id: str = ""                  # meta that scopes cleanup to one engine
    health_ttl: str = settings.DOCKER_HEALTH_TTL
    check_interval: str = settings.SERVICE_CHECK_INTERVAL
    check_timeout: str = settings.SERVICE_CHECK_TIMEOUT
    deregister_after: str = settings.SERVICE_DEREGISTER_CRITICAL_AFTER


@dataclass(frozen=True)
class ContainerService:
    """One catalog registration made for one container port."""

    id: str
    name: str
    address: str
    port: int
    container_id: str
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    checks: tuple[Mapping[str, Any], ...] = ()
    health_check_id: str | None = None  # the TTL check that mirrors the Docker HEALTHCHECK

    def register_kwargs(self, health: str | None = None) -> dict[str, Any]:
        """Arguments of py-consul's `agent.service.register`; `health` seeds the TTL check's status."""
        checks = [dict(check) for check in self.checks]
        if self.health_check_id and health:
            for check in checks:
                if check.get("CheckID") == self.health_check_id:
                    check["Status"] = docker_health_status(health)
        return service_register_kwargs(self.name, self.id, self.address, self.port, self.tags, self.meta, checks)


@dataclass(frozen=True)
class ContainerPlan:
    """The services for a container, and why any of its ports got none (for the log)."""

    services: tuple[ContainerService, ...] = ()
    skipped: tuple[str, ...] = ()


def docker_health_status(health: str) -> str:
    """Consul check status for a Docker health status: only `healthy` passes."""
    return DOCKER_HEALTH_TO_STATUS.get(health, CRITICAL)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in FALSE_WORDS


def service_attributes(container: ContainerInfo, port: int) -> tuple[dict[str, str], frozenset[str]]:
    """SERVICE_* attributes for one port (lower-case keys) and which of them were port-specific.

    Env first, then labels (labels win); `SERVICE_<port>_<KEY>` wins over `SERVICE_<KEY>`.
    """
    generic: dict[str, str] = {}
    specific: dict[str, str] = {}
    for source in (container.env, container.labels):
        for key, value in source.items():
            if not key.startswith(PREFIX) or len(key) == len(PREFIX):
                continue
            attr = key[len(PREFIX):]
            per_port = _PORT_ATTR.match(attr)
            if per_port:
                if int(per_port.group(1)) == port:
                    specific[per_port.group(2).lower()] = value
            else:
                generic[attr.lower()] = value
    return {**generic, **specific}, frozenset(specific)


def plan_services(container: ContainerInfo, options: RegistrarOptions) -> ContainerPlan:
    """The registrations this container should have (none when it is not running)."""
    if not container.running:
        return ContainerPlan()
    if options.explicit and not _names_itself(container):
        return ContainerPlan()  # explicit mode: not ours to explain
    base = f"container {container.name}"
    candidates = _ports_to_register(container, options)
    if not candidates:
        return ContainerPlan(skipped=(f"{base}: no {'exposed' if options.internal else 'published'} ports",))
    group = len({m.port for m in candidates}) > 1
    services: list[ContainerService] = []
    skipped: list[str] = []
    for mapping in candidates:
        attrs, from_port = service_attributes(container, mapping.port)
        where = f"{base} port {mapping.port}/{mapping.protocol}"
        if truthy(attrs.get("ignore")):
            skipped.append(f"{where}: SERVICE_IGNORE is set")
            continue
        if options.explicit and not attrs.get("name"):
            skipped.append(f"{where}: no SERVICE_NAME (explicit mode)")
            continue
        try:
            services.append(_service(container, mapping, attrs, from_port, group, options))
        except LabelError as exc:
            skipped.append(f"{where}: {exc}")
    return ContainerPlan(tuple(services), tuple(skipped))


def _names_itself(container: ContainerInfo) -> bool:
    """Whether SERVICE_NAME or some SERVICE_<port>_NAME is set (in env or labels)."""
    keys = set(container.env) | set(container.labels)
    return any(key == "SERVICE_NAME" or (key.startswith(PREFIX) and key.endswith("_NAME") and
                                         _PORT_ATTR.match(key[len(PREFIX):])) for key in keys)


def _ports_to_register(container: ContainerInfo, options: RegistrarOptions) -> list[PortMapping]:
    if options.internal or container.network_mode == "host":
        unique: dict[tuple[int, str], PortMapping] = {}
        for mapping in container.ports:
            unique.setdefault((mapping.port, mapping.protocol), mapping)
        return list(unique.values())
    return [mapping for mapping in container.ports if mapping.published]


def _service(container: ContainerInfo, mapping: PortMapping, attrs: Mapping[str, str], from_port: frozenset[str],
             group: bool, options: RegistrarOptions) -> ContainerService:
    name = attrs.get("name") or _image_base_name(container.image) or container.name
    if group and "name" not in from_port:
        name = f"{name}-{mapping.port}"
    address, port = _address(container, mapping, options)
    default_id = f"{options.node}:{container.name}:{mapping.port}" + (":udp" if mapping.protocol == "udp" else "")
    service_id = attrs.get("id") or default_id
    if attrs.get("id") and group and "id" not in from_port:
        service_id = f"{service_id}:{mapping.port}"
    checks = _checks(service_id, address, port, attrs, options)
    health_check_id = None
    if container.health is not None:
        health_check_id = f"service:{service_id}:docker-health"
        checks.append({
            "CheckID": health_check_id,
            "Name": "Docker HEALTHCHECK",
            "TTL": options.health_ttl,
            "Status": docker_health_status(container.health),
            "Notes": f"mirrors the health status of container {container.name}",
            "DeregisterCriticalServiceAfter": options.deregister_after,
        })
    return ContainerService(
        id=service_id,
        name=name,
        address=address,
        port=port,
        container_id=container.id,
        tags=tuple(dict.fromkeys(parse_tags(attrs.get("tags")) + options.forced_tags)),
        meta=_meta(container, attrs, options),
        checks=tuple(checks),
        health_check_id=health_check_id,
    )


def _image_base_name(image: str) -> str:
    """`registry:5000/team/web:1.2@sha256:…` → `web` (registrator's default service name)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def _address(container: ContainerInfo, mapping: PortMapping, options: RegistrarOptions) -> tuple[str, int]:
    if container.network_mode == "host":
        return options.host_ip, mapping.port
    if options.internal:
        ip = container_address(container, options.network)
        if not ip:
            raise LabelError("no address on any network (internal mode)")
        return ip, mapping.port
    if mapping.host_ip in ("", "0.0.0.0", "::"):
        return options.host_ip, mapping.host_port or mapping.port
    return mapping.host_ip, mapping.host_port or mapping.port


def container_address(container: ContainerInfo, network: str | None) -> str:
    """The container's IP on `network` (exact name, or a compose network `<project>_<network>`),
    else on its only network, else on the first network by name."""
    if not container.networks:
        return ""
    if network:
        for name, ip in container.networks.items():
            if name == network or name.endswith(f"_{network}"):
                return ip
    return container.networks[sorted(container.networks)[0]]


def _checks(service_id: str, address: str, port: int, attrs: Mapping[str, str], options: RegistrarOptions) -> list[dict[str, Any]]:
    interval = _duration(attrs, "check_interval", options.check_interval)
    timeout = _duration(attrs, "check_timeout", options.check_timeout)
    deregister = _duration(attrs, "check_deregister_after", options.deregister_after)
    host = f"[{address}]" if ":" in address else address
    if attrs.get("check_script") or attrs.get("check_cmd"):
        which = "SERVICE_CHECK_SCRIPT" if attrs.get("check_script") else "SERVICE_CHECK_CMD"
        raise LabelError(f"{which} is not supported (script checks run inside Consul agents); "
                         "use SERVICE_CHECK_HTTP, SERVICE_CHECK_TCP or a Docker HEALTHCHECK")
    if attrs.get("check_http") or attrs.get("check_https"):
        scheme = "http" if attrs.get("check_http") else "https"
        path = attrs[f"check_{scheme}"].strip()
        if not path.startswith("/"):
            raise LabelError(f"SERVICE_CHECK_{scheme.upper()}={path!r} must be a path starting with '/'")
        check = Check.http(f"{scheme}://{host}:{port}{path}", interval, timeout=timeout, deregister=deregister)
        if scheme == "https" and truthy(attrs.get("check_tls_skip_verify")):
            check["TLSSkipVerify"] = True
    elif attrs.get("check_ttl"):
        check = Check.ttl(_duration(attrs, "check_ttl", ""))
        check["DeregisterCriticalServiceAfter"] = deregister
    elif truthy(attrs.get("check_tcp")):
        check = Check.tcp(address, port, interval, timeout=timeout, deregister=deregister)
    else:
        return []
    status = attrs.get("check_initial_status")
    if status:
        if status not in STATUSES:
            raise LabelError(f"SERVICE_CHECK_INITIAL_STATUS={status!r} must be one of {', '.join(STATUSES)}")
        check["Status"] = status
    check["CheckID"] = f"service:{service_id}"
    check["Name"] = f"Service '{service_id}' check"
    return [check]


def _duration(attrs: Mapping[str, str], key: str, default: str) -> str:
    value = (attrs.get(key) or "").strip()
    if not value:
        return default
    if not _DURATION.match(value):
        raise LabelError(f"SERVICE_{key.upper()}={value!r} is not a duration (like 10s, 1m30s, 500ms)")
    return value


def _meta(container: ContainerInfo, attrs: Mapping[str, str], options: RegistrarOptions) -> dict[str, str]:
    meta = {key: value for key, value in sorted(attrs.items()) if key not in RESERVED_ATTRS}
    for key, value in meta.items():
        if not _META_KEY.match(key):
            raise LabelError(f"SERVICE_{key.upper()}: meta keys may only hold letters, digits, '_' and '-'")
        if len(value) > 512:
            raise LabelError(f"SERVICE_{key.upper()}: meta values are limited to 512 characters")
    meta.update({
        META_REGISTRAR: REGISTRAR_NAME,
        META_ENGINE: options.engine_id,
        META_CONTAINER: container.id,
        META_CONTAINER_NAME: container.name,
    })
    return meta


def owned_by(meta: Mapping[str, str] | None, engine_id: str) -> bool:
    """Whether a catalog registration was made by this registrar for this engine."""
    meta = meta or {}
    return meta.get(META_REGISTRAR) == REGISTRAR_NAME and meta.get(META_ENGINE) == engine_id
