"""Finding Ray and joining a cluster: ``local`` starts one in this process, anything else connects to a running one
(``auto``, ``HOST:PORT``, as ``ray start --head`` / ``ray start --address=...`` made it)."""
from __future__ import annotations

import importlib
import os
import re
import socket
from types import ModuleType

__all__ = ["ClusterError", "RayMissingError", "check_address", "connect", "reachable", "require_ray"]

EXTRA_HINT = "pip install 'icd-matcher[ray]'"
PROBE_SECONDS = 10.0  # a head node that does not answer a TCP connection within this is reported (ray.init waits on)
_ADDRESS = re.compile(r"^(local|auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")


class ClusterError(ValueError):
    """A cluster job cannot start: a bad address, no cluster there, or unusable input."""


class RayMissingError(ClusterError):
    """Ray is not installed."""


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or :class:`RayMissingError` naming the extra to install."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as exc:
        raise RayMissingError(f"running on a cluster needs Ray, which is not installed ({exc}); install the "
                              f"extra: {EXTRA_HINT}") from None
    return ray


def check_address(address: str) -> str:
    """``address`` when it reads as ``local``, ``auto`` or ``HOST:PORT``, else :class:`ClusterError`."""
    address = str(address).strip()
    if not _ADDRESS.match(address):
        raise ClusterError(f"bad Ray address {address!r}: use 'local' (a cluster in this process), 'auto' (the "
                           "cluster this machine joined) or HOST:PORT of the head node (e.g. 10.0.0.1:6379)")
    return address


def reachable(address: str, timeout: float = PROBE_SECONDS) -> None:
    """:class:`ClusterError` unless something accepts TCP connections at ``HOST:PORT`` (``ray://`` stripped)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: nothing answers there ({exc}); start the "
                           "head node with `ray start --head` and give its HOST:PORT (default port 6379)") from None


def connect(address: str, *, num_cpus: int | None = None) -> ModuleType:
    """Join the cluster at ``address`` (once per process; a running Ray session is kept as it is) and return
    ``ray``. ``local`` starts a cluster of ``num_cpus`` CPUs (default: this machine's); other addresses connect to a
    running cluster. A cluster that cannot be reached raises :class:`ClusterError`."""
    address = check_address(address)
    ray = require_ray()
    if ray.is_initialized():
        return ray
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address not in ("local", "auto"):
        reachable(address)
    try:
        if address == "local":
            ray.init(num_cpus=int(num_cpus or os.cpu_count() or 1), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from None
    return ray
