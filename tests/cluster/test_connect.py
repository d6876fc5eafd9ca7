"""Joining a cluster: addresses, a missing Ray, an address where no cluster runs (exit 2 from the command line)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from matcher.cli import main
from matcher.cluster.connect import ClusterError, RayMissingError, check_address, connect

pytest.importorskip("ray")


@pytest.mark.parametrize("address", ["local", "auto", "10.0.0.1:6379", "head-node.example:6379", "ray://h:10001"])
def test_addresses_that_read_well(address):
    assert check_address(f" {address} ") == address


@pytest.mark.parametrize("address", ["", "somewhere", "host:port", "10.0.0.1", "a b:1"])
def test_bad_addresses_are_refused_by_name(address):
    with pytest.raises(ClusterError, match="bad Ray address"):
        check_address(address)


def test_without_ray_the_error_names_the_extra(monkeypatch, collection, index, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayMissingError, match=r"icd-matcher\[ray\]"):
        connect("local")
    _, qs = collection
    code = main(["match", "--queries", str(qs), "--index", str(index), "--output", str(tmp_path / "o.csv"),
                 "--ray", "local", "--no-progress"])
    assert code == 2 and "pip install 'icd-matcher[ray]'" in capsys.readouterr().err
    code = main(["index", str(collection[0]), "--index", str(tmp_path / "new"), "--ray", "local", "--no-progress"])
    assert code == 2 and "pip install 'icd-matcher[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_an_address_without_a_cluster_exits_2(collection, index, tmp_path):
    _, qs = collection
    out = tmp_path / "o.csv"
    for address in ("127.0.0.1:1", "not an address"):
        run = subprocess.run([sys.executable, "-m", "matcher.cli", "match", "--queries", str(qs), "--index",
                              str(index), "--output", str(out), "--ray", address, "--no-progress"],
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 2, run.stderr[-2000:]
        assert "error:" in run.stderr and ("cannot join the Ray cluster" in run.stderr or
                                           "bad Ray address" in run.stderr)
    assert not out.exists()
