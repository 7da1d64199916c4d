"""The agent's exit watch (agent/exits.py): a pidfd per running sandbox's command says which
ended with one poll(), and which still run without reading a file."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.agent.exits import FD_SETSIZE, ExitWatch
from podnet.runtime import process


@pytest.fixture(autouse=True)
def descriptors() -> Iterator[None]:
    """Room above FD_SETSIZE, as the agent makes for itself (agent/server.raise_fd_limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _sandbox(root: Path, name: str, proc: subprocess.Popen, pid_start: int | None = None) -> None:
    state_dir = root / name
    state_dir.mkdir()
    started = process.start_time(proc.pid) if pid_start is None else pid_start
    (state_dir / "state.json").write_text(json.dumps({"pid": proc.pid, "pid_start": started, "started_at": 1234.5}))


def _exited(root: Path, name: str, code: int) -> None:
    (root / name / "exit.json").write_text(json.dumps({"exit_code": code, "finished_at": 1240.0}))


def test_a_running_command_is_held_and_its_end_seen(tmp_path: Path) -> None:
    watch = ExitWatch(lambda i: str(tmp_path / i))
    a, b = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        _sandbox(tmp_path, "a", a)
        _sandbox(tmp_path, "b", b)
        watch.follow(["a", "b"])
        assert watch.ended() == []
        running = watch.running()
        assert sorted(running) == ["a", "b"]
        assert running["a"].running and running["a"].pid == a.pid and running["a"].started_at == 1234.5
        assert running["a"].exit_code is None and running["a"].finished_at is None

        a.kill()
        a.wait()
        assert sorted(watch.running()) == ["b"]  # gone at once, with no exit record yet
        assert watch.ended() == []  # ended only once its supervisor recorded the exit, as before
        _exited(tmp_path, "a", 137)
        assert watch.ended() == ["a"]
        assert sorted(watch.running()) == ["b"]

        watch.follow(["b"])  # a was reaped: let go
        assert watch.ended() == [] and sorted(watch.running()) == ["b"]
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
        watch.close()


def test_a_reused_pid_or_a_missing_record_is_not_held(tmp_path: Path) -> None:
    watch = ExitWatch(lambda i: str(tmp_path / i))
    proc = subprocess.Popen(["sleep", "60"])
    try:
        _sandbox(tmp_path, "reused", proc, pid_start=1)  # the pid now names another process
        (tmp_path / "unrecorded").mkdir()
        watch.follow(["reused", "unrecorded"])
        assert watch.running() == {}
        assert watch.ended() == []
        _exited(tmp_path, "reused", 0)
        assert watch.ended() == ["reused"]
    finally:
        proc.kill()
        proc.wait()
        watch.close()


def test_a_restarted_sandbox_is_held_by_its_new_command(tmp_path: Path) -> None:
    watch = ExitWatch(lambda i: str(tmp_path / i))
    first, second = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        _sandbox(tmp_path, "a", first)
        watch.follow(["a"])
        first.kill()
        first.wait()
        (tmp_path / "a" / "state.json").write_text(json.dumps(
            {"pid": second.pid, "pid_start": process.start_time(second.pid), "started_at": 2000.0}))
        assert watch.ended() == []  # its first command's end was seen; the new one runs
        assert watch.running()["a"].pid == second.pid
    finally:
        for p in (first, second):
            p.kill()
            p.wait()
        watch.close()


def test_pidfds_stay_out_of_selects_range_and_close_lets_them_go(tmp_path: Path) -> None:
    watch = ExitWatch(lambda i: str(tmp_path / i))
    proc = subprocess.Popen(["sleep", "60"])
    try:
        _sandbox(tmp_path, "a", proc)
        before = {int(fd) for fd in os.listdir("/proc/self/fd")}
        watch.follow(["a"])
        added = {int(fd) for fd in os.listdir("/proc/self/fd")} - before
        assert len(added) == 1 and min(added) >= FD_SETSIZE  # select() users keep 0-1023
        assert "anon_inode:[pidfd]" in os.readlink(f"/proc/self/fd/{min(added)}")
        watch.close()
        assert {int(fd) for fd in os.listdir("/proc/self/fd")} == before and watch.running() == {}
    finally:
        proc.kill()
        proc.wait()
