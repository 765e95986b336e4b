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


def _listening(port: int) -> set[str]:
    """The local addresses (as /proc/net/tcp{,6} writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.parametrize("where", ["elsewhere", "apps", "root"])
def test_the_dashboard_binds_loopback_wherever_it_is_started_from(where, tmp_path):
    """Issue 28: started from another folder (`streamlit run /path/to/apps/dashboard.py`), the
    repo-root config was not read and the server listened on every interface. With no flag but the
    port, from any working folder, it listens on 127.0.0.1 alone."""
    from apps import server

    cwd = {"elsewhere": tmp_path, "apps": ROOT / "apps", "root": ROOT}[where]
    port = server.free_port()
    proc, _ = server.start(port=port, address=None, flags=False, cwd=cwd, timeout=120)
    try:
        assert _listening(port) == {"0100007F"}, _listening(port)  # 127.0.0.1, not 0.0.0.0 or ::
    finally:
        server.stop(proc)


def test_a_server_started_without_an_address_serves_nothing(monkeypatch):
    """Where the config beside the script is not read (a Streamlit too old for it) and no address
    was given, the page refuses to serve instead of serving every interface."""
    from streamlit.config_option import ConfigOption

    monkeypatch.setattr("streamlit.config.get_where_defined", lambda key: ConfigOption.DEFAULT_DEFINITION)
    at = open_app("", "a b c")
    assert any("started without an address" in e for e in errors(at)), errors(at)
    assert not at.markdown or not any(m.value.startswith("Top prediction") for m in at.markdown)


def test_network_visitors_get_no_hub_downloads_and_listed_paths_are_checked(network_mode, tiny_llama_dir, tiny_index,
                                                                            monkeypatch):  # fmt: skip
    """Issue 28: a registered hub model (gpt2-xl) reached the download code for a network visitor,
    and an index picked from the list skipped the path check. Now a hub model the server has not
    cached is refused, the list offers only indexes inside the roots (a link in out/ pointing
    outside is not offered), and a listed one opens; no refusal names a server folder."""
    import os
    import shutil

    monkeypatch.setattr("apps.state._hub_cached", lambda repo: False)
    at = open_app("gpt2-xl", "a b c")
    assert any("gpt2-xl is not on this server and visitors cannot download models" in e for e in errors(at)), errors(at)
    monkeypatch.setenv("INTERP_ALLOWED_ROOTS", os.pathsep.join([str(network_mode), str(tiny_llama_dir)]))
    monkeypatch.chdir(network_mode)  # the server's working folder: ./out is searched for indexes
    (network_mode / "out").mkdir()
    (network_mode / "out" / "outside").symlink_to(tiny_index)  # resolves outside the roots
    shutil.copytree(tiny_index, network_mode / "out" / "inside")
    at = open_app(str(tiny_llama_dir), "a b c", page="views/memories.py")
    assert at.selectbox(key="mem_found").options == ["out/inside"] and not errors(at), errors(at)
    assert any(c.value.startswith("MemoryIndex(") for c in at.caption)  # the listed index opened
    at.text_input(key="mem_dir").input("out/outside").run()
    refused = [e for e in errors(at) if "outside the folders this server may open" in e]
    assert refused and not any(re.search(r"(^|[\s'(])/\w", e) for e in errors(at)), errors(at)  # no absolute path


def test_user_path_returns_the_path_it_checked(network_mode, tmp_path):
    """The check resolves `..` and links and hands back that resolved path, not the text typed."""
    from apps import state
    from interp.errors import WorkbenchError

    (network_mode / "a").mkdir()
    (network_mode / "link").symlink_to("/etc")
    assert state.user_path(str(network_mode / "a" / ".." / "a"), "folder") == (network_mode / "a").resolve()
    with pytest.raises(WorkbenchError, match="outside the folders"):
        state.user_path(str(network_mode / "link"), "folder")  # an outward link
    with pytest.raises(WorkbenchError, match="outside the folders"):
        state.user_path(str(network_mode / ".." / "x"), "folder")
