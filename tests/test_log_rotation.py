"""gateway.log_rotation on a temporary directory: copy-then-truncate, shifting, the keep count, 0 = off,
failures reported once; and the flags' validation."""

from __future__ import annotations

import fcntl
import logging
import os

import pytest

from gateway.command import parse_args
from gateway.haproxy import HAProxyProcess
from gateway.log_rotation import LogRotator, rotate_if_over, rotated_path


def write(path, text: str) -> None:
    with open(path, "a") as log_file:
        log_file.write(text)


def test_over_the_limit_the_live_file_is_copied_and_truncated_and_an_append_writer_starts_again_at_its_end(tmp_path):
    live = tmp_path / "haproxy.log"
    writer = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_APPEND)   # what HAProxy holds: its stdout
    try:
        os.write(writer, b"first\n" * 10)
        assert not rotate_if_over(live, 100, keep=2), "60 bytes is under the limit"
        os.write(writer, b"second\n" * 10)
        assert rotate_if_over(live, 100, keep=2)
        assert rotated_path(live, 1).read_text() == "first\n" * 10 + "second\n" * 10
        assert live.stat().st_size == 0
        os.write(writer, b"third\n")
        assert live.read_bytes() == b"third\n", "the writer's next line lands at the start of the truncated file, no hole"
    finally:
        os.close(writer)


def test_a_writer_that_cleared_o_append_as_haproxy_does_writes_at_the_start_not_after_a_hole(tmp_path):
    live = tmp_path / "haproxy.log"
    writer = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(writer, b"[NOTICE] first line\n")
        fcntl.fcntl(writer, fcntl.F_SETFL, os.O_NONBLOCK)   # HAProxy 2.6 on its first log line: O_APPEND is gone
        os.write(writer, b"request\n" * 20)
        held = os.dup(writer)   # what the controller holds: the same open file description
        try:
            assert rotate_if_over(live, 100, keep=1, writer=held)
        finally:
            os.close(held)
        os.write(writer, b"after\n")
        assert live.read_bytes() == b"after\n", "no hole of zeros where the old lines were"
        assert rotated_path(live, 1).read_bytes() == b"[NOTICE] first line\n" + b"request\n" * 20
    finally:
        os.close(writer)


def test_older_files_shift_and_only_keep_of_them_stay(tmp_path):
    live = tmp_path / "haproxy.log"
    for generation in range(4):
        write(live, f"generation {generation}\n" * 20)
        assert rotate_if_over(live, 100, keep=2)
    assert rotated_path(live, 1).read_text().startswith("generation 3")
    assert rotated_path(live, 2).read_text().startswith("generation 2")
    assert not rotated_path(live, 3).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.log", "haproxy.log.1", "haproxy.log.2"]


def test_limit_zero_never_rotates_and_keep_zero_only_truncates(tmp_path):
    live = tmp_path / "haproxy.log"
    write(live, "x" * 10_000)
    assert not rotate_if_over(live, 0, keep=2)
    assert live.stat().st_size == 10_000
    assert not LogRotator(live, 0, 2, interval=0).check(now=100.0)
    assert live.stat().st_size == 10_000

    assert rotate_if_over(live, 100, keep=0)
    assert live.stat().st_size == 0 and not rotated_path(live, 1).exists()
    assert not rotate_if_over(tmp_path / "missing.log", 100, keep=2), "no log yet: nothing to do"


def test_the_rotator_checks_at_most_every_interval_and_counts(tmp_path):
    live = tmp_path / "haproxy.log"
    rotator = LogRotator(live, 100, 2, interval=2.0)
    write(live, "x" * 200)
    assert rotator.check(now=10.0)
    write(live, "y" * 200)
    assert not rotator.check(now=11.0), "checked a second ago"
    assert live.stat().st_size == 200
    assert rotator.check(now=12.0)
    view = rotator.view()
    assert (view["rotations"], view["bytes"], view["max_bytes"], view["keep"], view["last_error"]) == (2, 0, 100, 2, None)


def test_a_failed_rotation_loses_nothing_and_is_logged_once(tmp_path, caplog):
    live = tmp_path / "haproxy.log"
    write(live, "kept\n" * 40)
    write(rotated_path(live, 1), "older\n")
    (tmp_path / "haproxy.log.copying").mkdir()   # the copy cannot be written
    rotator = LogRotator(live, 100, 2, interval=0)
    with caplog.at_level(logging.ERROR, logger="shopgate.gateway.log_rotation"):
        assert not rotator.check(now=1.0)
        assert not rotator.check(now=2.0)
    assert live.read_text() == "kept\n" * 40, "the live file is not truncated without its copy"
    assert rotated_path(live, 1).read_text() == "older\n" and not rotated_path(live, 2).exists()
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and str(live) in errors[0] and "Is a directory" in errors[0], errors
    assert rotator.view()["last_error"] == errors[0] and rotator.rotations == 0


def test_alerts_are_read_from_the_start_of_a_log_truncated_since_the_offset(tmp_path):
    live = tmp_path / "haproxy.log"
    write(live, "[ALERT]    (1) : Binding [haproxy.cfg:20] for proxy stats: cannot bind socket\n")
    haproxy = HAProxyProcess("haproxy", tmp_path / "haproxy.cfg", tmp_path / "master.sock", live, tmp_path / "haproxy.pid")
    assert "cannot bind" in haproxy._log_since(50_000), "an offset taken before a truncation is past the end"
    assert haproxy._log_since(live.stat().st_size) == ""


@pytest.mark.parametrize("flag", ["--log-max-bytes", "--log-keep"])
def test_negative_log_flags_are_refused_by_name(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([flag, "-1"])
    assert exit_info.value.code == 2
    assert f"{flag}: expected a number of 0 or more, got -1" in capsys.readouterr().err
    config = parse_args([flag, "0"])
    assert (config.log_max_bytes if flag == "--log-max-bytes" else config.log_keep) == 0
