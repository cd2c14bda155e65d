"""What shopgate.processes reads from /proc about a real child process, and the ports it hands out."""

from __future__ import annotations

import socket
import subprocess
import sys

from shopgate.processes import ephemeral_port_start, free_port, process_cpu_seconds

BURN_THEN_WAIT = "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('burnt', flush=True)\nsys.stdin.read()"


def test_cpu_seconds_of_a_process_count_what_it_burnt_and_none_once_it_is_gone():
    child = subprocess.Popen([sys.executable, "-c", BURN_THEN_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "burnt\n"
        used = process_cpu_seconds(child.pid)
        assert used is not None and 0.29 <= used < 5   # the kernel counts in clock ticks (10 ms)
    finally:
        child.communicate("")
    assert process_cpu_seconds(child.pid) is None


def test_ports_for_servers_are_distinct_listenable_and_never_where_outgoing_connections_land():
    """A port from the kernel's ephemeral range can be taken by an outgoing connection between choosing it
    and the server binding it (a service of `make up` once failed so); free_port stays below that range."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        outgoing = [socket.create_connection(listener.getsockname()) for _ in range(50)]
        try:
            taken = {conn.getsockname()[1] for conn in outgoing}
            ports = [free_port(udp_too=index % 2 == 0) for index in range(100)]
        finally:
            for conn in outgoing:
                conn.close()
    assert len(set(ports)) == len(ports)
    assert max(ports) < ephemeral_port_start() <= min(taken)
    for index, port in enumerate(ports[:10]):
        with socket.create_server(("127.0.0.1", port)):
            if index % 2 == 0:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
