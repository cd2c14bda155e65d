"""`shopgate demo --short`: starts its own stack, runs every step under load, reports 0 failed requests,
0 answers from the wrong environment and a sticky client that never moved."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

from shopgate.processes import pid_alive, shopgate_argv
from shopgate.settings import PROJECT_ROOT
from stack_harness import StackUnderTest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def remember_until_exit(stack: StackUnderTest, proc: subprocess.Popen) -> None:
    """Note every process the demo's stack runs (from its manifest) until the demo exits."""
    while proc.poll() is None:
        stack.remember()
        time.sleep(0.3)


def test_short_demo_reports_zero_failed_requests(tmp_path):
    stack = StackUnderTest(tmp_path)
    chart = tmp_path / "demo.png"
    argv = shopgate_argv("demo", "--short", "--json", "--chart", str(chart), "--state-dir", str(stack.state_dir), *stack.port_args())
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watching = threading.Thread(target=remember_until_exit, args=(stack, proc), daemon=True)
    watching.start()
    try:
        out, progress = proc.communicate(timeout=240)
        watching.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stack.cleanup()
    report = json.loads(out) if out.strip() else {}
    assert proc.returncode == 0, f"{progress}\n{out}"
    assert report["ok"] and report["error"] is None
    load = report["load"]
    assert load["failed"] == 0, load["first_failures"]
    assert load["requests"] >= 0.9 * report["rate"] * report["duration"], "the load kept its rate through every step"
    assert any(k.startswith("POST 201") for k in load["statuses"]), load["statuses"]
    labels = [step["label"] for step in report["steps"]]
    assert len(labels) == 9, labels
    assert labels[0] == "scale products 2 → 4" and labels[1].startswith("SIGKILL products-")
    assert labels[2] == "scale products 3 → 1" and labels[3].startswith("roll users")
    assert labels[6].startswith("staging environment") and labels[7] == "sticky products (cookie), scale products 1 → 2"
    checks = report["checks"]
    assert checks["staging requests"] == checks["sticky requests"] == 40, checks
    assert checks["staging requests failed"] == checks["answered by the wrong environment"] == 0, checks
    assert checks["sticky requests failed"] == checks["sticky client moved"] == 0, checks
    assert checks["instances 10 new clients reached"] == 2, "after the scale-up new clients reach both instances"
    # the certificate renewal under HTTPS load: served, no reload, every HTTPS request and handshake fine
    rotation = report["steps"][8]
    assert labels[8] == "renew the HTTPS certificate in KV shopgate/tls/certs/localhost"
    assert rotation["notes"] and rotation["notes"][0].startswith("reloads unchanged"), rotation
    assert rotation["https_requests"] > 0 and rotation["failed"] == 0 and rotation["failed_handshakes"] == 0, rotation
    assert load["https_requests"] >= load["requests"] // 4 and load["failed_handshakes"] == 0
    for step in report["steps"]:
        assert step["measures"] and all(m["gateway"] is not None and m["gateway"] >= 0 for m in step["measures"]), step
    # live progress went to stderr while it ran
    assert "step 1: scale products 2 → 4" in progress and "✓" in progress
    assert chart.read_bytes().startswith(PNG_MAGIC)
    (PROJECT_ROOT / "artifacts").mkdir(exist_ok=True)
    shutil.copy(chart, PROJECT_ROOT / "artifacts" / "demo-short.png")
    # the demo started its own stack and stopped it again: nothing of it is left
    assert len(stack.seen_groups) >= 12, "the demo's stack was watched while it ran"
    assert stack.manifest() is None
    assert not [pid for pid in stack.seen_groups if pid_alive(pid)]
