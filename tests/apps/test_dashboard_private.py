"""The dashboard is private by default: `make dashboard` binds to loopback, and when it is
served to a network on purpose, typed paths must stay under the allowed roots."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from dashboard_helpers import errors, open_app
from streamlit import config

ROOT = Path(__file__).resolve().parents[2]


def _dashboard_command(*extra: str) -> str:
    out = subprocess.run(["make", "-n", "dashboard", *extra], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return next(line for line in out.replace("\\\n", " ").splitlines() if "streamlit run" in line)


def test_make_dashboard_binds_to_loopback_and_hides_tracebacks():
    line = _dashboard_command()
    assert re.search(r"--server\.address 127\.0\.0\.1\b", line), line
    assert "--client.showErrorDetails none" in line
    assert "--server.address 0.0.0.0" in _dashboard_command("ADDRESS=0.0.0.0")


@pytest.fixture
def network_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_ALLOWED_ROOTS", str(tmp_path))
    config.set_option("server.address", "0.0.0.0")
    yield tmp_path
    config.set_option("server.address", "127.0.0.1")


def test_network_visitors_cannot_type_paths_outside_the_roots(network_mode, tiny_llama_dir, tiny_index):
    at = open_app("", "a b c", page="views/training.py", train_dir="/etc")
    assert any("outside the folders this server may open" in e for e in errors(at)), errors(at)
    at = open_app(str(tiny_llama_dir), "a b c")  # a model folder outside the roots
    assert any("outside the folders" in e and "INTERP_ALLOWED_ROOTS" in e for e in errors(at)), errors(at)


def test_loopback_allows_any_path(tiny_llama_dir):
    at = open_app(str(tiny_llama_dir), "a b c")
    assert not errors(at)
