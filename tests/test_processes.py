"""What shopgate.processes reads from /proc about a real child process."""

from __future__ import annotations

import subprocess
import sys

from shopgate.processes import process_cpu_seconds

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
