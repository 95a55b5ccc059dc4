"""What a local Dask cluster of a sweep or calibration opens to the network.

Without ``--dashboard`` every listening socket of this process and of the worker processes it
starts is on loopback, and no dashboard page is served; with ``--dashboard ADDRESS`` the dashboard
is served there and its URL printed. (distributed always starts the scheduler's HTTP server for its
health routes: bound to 127.0.0.1 on a free port.)
"""
from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

import pytest

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")  # a dependency of distributed

from nksim.argtypes import DEFAULT_DASHBOARD, dashboard_address  # noqa: E402
from nksim.cli import main  # noqa: E402
from nksim.cluster import dask_client  # noqa: E402


def _listening() -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening inet socket of this process and its children."""
    me = psutil.Process()
    found = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(proc.pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_local_cluster_listens_on_loopback_only_and_serves_no_dashboard(capsys):
    before = set(_listening())
    with dask_client(workers=1) as client:
        opened = [s for s in _listening() if s not in before]
        workers = client.scheduler_info()["workers"]
        link = client.dashboard_link
    assert len(workers) == 1
    pids = {pid for pid, _, _ in opened}
    assert len(pids) >= 2, f"expected sockets of this process and of the worker process: {opened}"
    outside = [s for s in opened if not ipaddress.ip_address(s[1]).is_loopback]
    assert not outside, f"listening beyond loopback: {outside}"
    assert "dashboard" not in capsys.readouterr().out.lower()
    assert "127.0.0.1" in link  # the health-only HTTP server; the dashboard page itself is not served
    # (the server is gone with the cluster, so its page cannot be fetched here; see the next test)


def test_dashboard_on_request_is_served_and_printed(capsys):
    with dask_client(workers=1, dashboard="127.0.0.1:0") as client:
        link = client.dashboard_link
        assert _status(link) == 200
        opened = _listening()
    assert f"Dask dashboard: {link}" in capsys.readouterr().out
    assert all(ipaddress.ip_address(ip).is_loopback for _, ip, _ in opened)


def test_without_dashboard_the_status_page_is_not_served():
    with dask_client(workers=1) as client:
        assert _status(client.dashboard_link) == 404


@pytest.mark.parametrize("text", ["8787", "host:port", "127.0.0.1:70000", "a b:1", "tcp://h:1"])
def test_dashboard_address_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="HOST:PORT"):
        dashboard_address(text)


def test_dashboard_address_accepted():
    assert dashboard_address(DEFAULT_DASHBOARD) == "127.0.0.1:8787"
    assert dashboard_address(":0") == ":0"


def test_dashboard_without_a_cluster_is_refused(tmp_path, capsys):
    spec = "experiments/two_infusion_schedules.toml"
    assert main(["sweep", spec, "--out", str(tmp_path / "s.zarr"), "--workers", "0", "--dashboard"]) == 2
    err = capsys.readouterr().err
    assert "--dashboard" in err and "--workers 0" in err
    assert not (tmp_path / "s.zarr").exists()
