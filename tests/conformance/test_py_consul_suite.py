"""Conformance: py-consul 1.8.0's own test suite, run against `shopgate catalog`.

The suite comes from the py-consul sdist on PyPI, fetched at test time into
`.cache/` (gitignored, never committed), with the one plugin its asyncio
tests need (pytest-asyncio, installed into `.cache/` too, so that it never
loads in our own suite). It runs in a subprocess with our fixture plugin
(`shopgate_consul_fixtures.py`) in place of upstream's Docker-based conftest. Two of its tests point HTTP checks at
`127.0.0.1:8500` — inside a Consul container that is the agent itself — so
each shard runs in a private network namespace (`unshare --net`) where the
catalog can own port 8500 without touching the machine's real 8500.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shopgate.settings import PROJECT_ROOT

PY_CONSUL_VERSION = "1.8.0"
PYTEST_ASYNCIO = "pytest-asyncio==1.5.0"
CACHE_DIR = PROJECT_ROOT / ".cache"
PLUGIN_DIR = Path(__file__).resolve().parent

#: Tests that must pass (issue 2) plus the ones beyond it that we also pass; file::class -> test names.
SELECTED: dict[str, list[str]] = {
    "tests/api/test_kv.py::TestConsul": [
        "test_kv", "test_kv_wait", "test_kv_encoding", "test_kv_put_cas", "test_kv_put_flags", "test_kv_recurse",
        "test_kv_delete", "test_kv_delete_cas", "test_kv_keys_only",
        "test_kv_acquire_release",  # beyond the required set: sessions
    ],
    "tests/api/test_agent.py::TestAgent": [
        "test_agent_checks", "test_service_multi_check", "test_service_dereg_issue_156",
        "test_agent_checks_service_id", "test_agent_register_check_no_service_id",
        "test_agent_register_enable_tag_override", "test_agent_service_maintenance", "test_agent_node_maintenance",
        "test_agent_members", "test_agent_self", "test_agent_services", "test_agent_service_tagged_addresses",
        # beyond the required set
        "test_agent_services_and_checks_filter", "test_agent_reload", "test_agent_token_invalid_type",
        "test_agent_service_register_kind_proxy_locality", "test_agent_force_leave_prune",
        "test_agent_service_connect", "test_agent_metrics", "test_agent_monitor_rejects_invalid_loglevel",
        "test_agent_token_permission_denied", "test_agent_token_set", "test_agent_leave",
    ],
    "tests/api/test_catalog.py::TestCatalog": [
        "test_catalog", "test_catalog_register_skip_node_update_and_tagged_addresses",
        "test_catalog_filter", "test_catalog_service_merge_central_config", "test_catalog_service_peer_unknown",
    ],
    "tests/api/test_health.py::TestHealth": [
        "test_health_service", "test_health_state", "test_health_node", "test_health_checks",
        "test_health_service_filter", "test_health_state_filter", "test_health_checks_filter",
        "test_health_node_filter", "test_health_service_merge_central_config", "test_health_service_peer",
        "test_health_connect", "test_health_ingress",
    ],
    "tests/api/test_status.py::TestStatus": ["test_status_leader", "test_status_peers"],
    "tests/api/test_session.py::TestSession": ["test_session", "test_session_delete_ttl_renew"],
    # py-consul's asyncio client (consul.aio) against the same server, blocking queries included.
    "tests/test_aio.py::TestAsyncioConsul": [
        "test_kv", "test_consul_ctor", "test_kv_binary", "test_kv_missing", "test_kv_put_flags", "test_kv_delete",
        "test_kv_subscribe", "test_agent_services", "test_session",
    ],
}

#: Tests that point HTTP checks at 127.0.0.1:8500 and so need the private network namespace.
NEEDS_PORT_8500 = {"test_agent_checks", "test_service_multi_check"}

SHARDS = 2


def _pip(*args: str, what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        pytest.fail(f"could not fetch {what} from PyPI:\n{done.stderr}")


def fetch_suite() -> Path:
    """The unpacked sdist, downloaded once into .cache/ with pip (PyPI's ordinary client)."""
    target = CACHE_DIR / f"py_consul-{PY_CONSUL_VERSION}"
    if (target / "tests" / "api").is_dir():
        return target
    CACHE_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        _pip("download", "--quiet", "--no-deps", "--no-binary", ":all:", f"py-consul=={PY_CONSUL_VERSION}", "-d", tmp,
             what=f"the py-consul {PY_CONSUL_VERSION} sdist")
        archive = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = Path(tmp) / target.name
        if not target.exists():
            unpacked.rename(target)  # atomic: a concurrent run sees all of it or nothing
    return target


def fetch_asyncio_plugin() -> Path:
    """pytest-asyncio in its own directory under .cache/, on the inner run's PYTHONPATH only."""
    target = CACHE_DIR / PYTEST_ASYNCIO.replace("==", "-")
    if (target / "pytest_asyncio").is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        site = Path(tmp) / "site"
        _pip("install", "--quiet", "--no-deps", "--target", str(site), PYTEST_ASYNCIO, what=PYTEST_ASYNCIO)
        if not target.exists():
            site.rename(target)
    return target


def private_network_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


def run_shard(suite: Path, plugins: Path, node_ids: list[str], private_net: bool, log_dir: Path) -> tuple[int, str]:
    pytest_argv = [sys.executable, "-m", "pytest", "-p", "shopgate_consul_fixtures", "--confcutdir=tests",
                   "-o", "addopts=", "-p", "no:cacheprovider", "-q", "-rfE", f"--basetemp={log_dir}", *node_ids]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PLUGIN_DIR), str(plugins)]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CONSUL_HTTP_ADDR", None)
    if private_net:
        env["SHOPGATE_CONFORMANCE_PORT"] = "8500"
        argv = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *pytest_argv]
    else:
        argv = pytest_argv
    done = subprocess.run(argv, cwd=suite, env=env, capture_output=True, text=True, timeout=240)
    return done.returncode, done.stdout + done.stderr


def run_in_shards(tmp_path: Path, names: list[str], shards: int) -> None:
    """Run the named tests of the suite in parallel shards; fail with the inner output if any fails."""
    suite, plugins = fetch_suite(), fetch_asyncio_plugin()
    private_net = private_network_available()
    node_ids = [f"{test_class}::{name}" for test_class, tests in SELECTED.items() for name in tests if name in names]
    groups = [node_ids[i::shards] for i in range(shards)]
    with ThreadPoolExecutor(shards) as pool:
        results = list(pool.map(
            lambda i: run_shard(suite, plugins, groups[i], private_net, tmp_path / f"shard{i}"), range(shards)))
    failed = [output for code, output in results if code != 0]
    assert not failed, "py-consul's suite failed against shopgate catalog:\n" + "\n\n".join(failed)
    for _, output in results:
        assert " passed" in output and "failed" not in output and "skipped" not in output, output
        print(output.strip().splitlines()[-1])  # e.g. "31 passed in 14.2s", shown with -s


def test_py_consul_suite_passes_against_the_catalog(tmp_path):
    names = [name for tests in SELECTED.values() for name in tests if name not in NEEDS_PORT_8500]
    run_in_shards(tmp_path, names, SHARDS)


def test_py_consul_checks_on_the_agents_own_port_pass(tmp_path):
    """The two tests whose HTTP checks probe 127.0.0.1:8500, the agent itself."""
    if not private_network_available():
        pytest.skip(f"{sorted(NEEDS_PORT_8500)} need a private network namespace (`unshare --net`, as root) "
                    "so that the catalog can listen on 127.0.0.1:8500 without touching the machine's port 8500")
    run_in_shards(tmp_path, sorted(NEEDS_PORT_8500), len(NEEDS_PORT_8500))
