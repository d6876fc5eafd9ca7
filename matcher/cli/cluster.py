"""``--ray ADDRESS`` and ``--ray-cpus N`` for ``icd index`` and ``icd match``: run the job on a Ray cluster
(:mod:`matcher.cluster`; needs the ``[ray]`` extra)."""
from __future__ import annotations

import argparse

__all__ = ["add_ray_arguments"]


def _cpus(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--ray ADDRESS`` and ``--ray-cpus N`` to ``p``."""
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on a Ray cluster (needs icd-matcher[ray]): 'local' starts one on this machine, 'auto' "
                        "joins the cluster this machine is part of, HOST:PORT the head node's address (ray start "
                        "--head); the index folder must be at the same path on every node")
    p.add_argument("--ray-cpus", type=_cpus, default=None, metavar="N",
                   help="with --ray local: CPUs of the local cluster (default: this machine's)")
