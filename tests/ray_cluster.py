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


def start_head(env: dict, *args: str) -> tuple[str, Path]:
    """(address, temp folder). ``args`` go to `ray start` (resources). Ray's socket paths must stay short: /tmp."""
    temp = Path(f"/tmp/ray-{os.getpid()}-{free_port()}")
    temp.mkdir()
    port = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--include-dashboard=false",
                    "--disable-usage-stats", *args], check=True, capture_output=True, env=env, timeout=180)
    return f"127.0.0.1:{port}", temp


def stop_head(temp: Path) -> None:
    mine = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
    for p in mine:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(mine, timeout=30)
    shutil.rmtree(temp, ignore_errors=True)
