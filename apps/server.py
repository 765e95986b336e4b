"""Start the dashboard as a real `streamlit run` server on a free localhost port (used by the
browser test and the latency benchmark)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

APP = Path(__file__).resolve().parent / "dashboard.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int | None = None, env: dict[str, str] | None = None, timeout: float = 90.0,
          log: Path | None = None, address: str | None = "127.0.0.1", cwd: Path | None = None,
          flags: bool = True) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """(process, base url) of a headless dashboard; waits until its health check answers.
    `address` None passes no --server.address and `flags` False none of the other settings but
    the port (what the config file must then supply); `cwd` is where it is started (the repo root)."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)]
    if address is not None:
        cmd += ["--server.address", address]
    if flags:
        cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
                "--client.toolbarMode", "viewer", "--client.showErrorDetails", "none"]  # fmt: skip
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (stays open for the server's life)
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                            cwd=cwd or APP.parent.parent)
    url = f"http://{address or '127.0.0.1'}:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
