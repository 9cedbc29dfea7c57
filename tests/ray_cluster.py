"""A Ray head started with `ray start` for a test, and stopped alone: `ray stop` would stop every Ray on the machine
(another test's, a user's). Its processes are found by the temporary folder named on their command lines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_agent_port() -> list[str]:
    """Every raylet starts a dashboard agent on port 52365 unless told otherwise; a second raylet on this machine (or
    another test's Ray) then finds it taken, and the job server has no agent to run jobs with."""
    return [f"--dashboard-agent-listen-port={free_port()}"]


def start_head(env: dict, *args: str, dashboard_port: int | None = None) -> tuple[str, Path]:
    """(address, temp folder). ``args`` go to `ray start` (resources). Ray's socket paths must stay short: /tmp.
    With ``dashboard_port`` the head serves the dashboard there (what `ray job submit` talks to)."""
    temp = Path(f"/tmp/ray-{os.getpid()}-{free_port()}")
    temp.mkdir()
    port = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    dashboard = (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
                 if dashboard_port else ["--include-dashboard=false"])
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}", *dashboard, *own_agent_port(),
                    "--disable-usage-stats", *args], check=True, capture_output=True, env=env, timeout=180)
    return f"127.0.0.1:{port}", temp


def stop_head(temp: Path) -> None:
    mine = [p for p in psutil.process_iter(["cmdline"])
            if str(temp) in " ".join(p.info["cmdline"] or []) and p.pid != os.getpid()]
    for p in mine:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(mine, timeout=30)
    for folder in temp.parent.glob(f"{temp.name}*"):  # the head's and any start_worker's
        shutil.rmtree(folder, ignore_errors=True)



def start_worker(env: dict, address: str, temp: Path, name: str, *args: str) -> None:
    """A second raylet joining the head at ``address`` on this machine: a node of its own (its own resources, and the
    environment ``env`` for its workers), with its own temporary folder named after the head's, so that
    ``stop_head(temp)`` stops and removes it too."""
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", f"--address={address}", f"--temp-dir={temp}{name}", *own_agent_port(),
                    "--disable-usage-stats", *args],
                   check=True, capture_output=True, env=env, timeout=180)
