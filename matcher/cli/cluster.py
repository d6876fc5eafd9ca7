"""``--ray ADDRESS`` and ``--ray-cpus N`` for ``icd index`` and ``icd match``: run the job on a Ray cluster
(:mod:`matcher.cluster`; needs the ``[ray]`` extra)."""
from __future__ import annotations

import argparse

from matcher.cli.common import positive_int

__all__ = ["add_ray_arguments"]


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``--ray ADDRESS`` and ``--ray-cpus N`` to ``p``."""
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on a Ray cluster (needs icd-matcher[ray]): 'local' starts one on this machine, 'auto' "
                        "joins the cluster this machine is part of, HOST:PORT the head node's address (ray start "
                        "--head); the index folder must be at the same path on every node")
    p.add_argument("--ray-cpus", type=positive_int, default=None, metavar="N",
                   help="with --ray local: CPUs of the local cluster (default: this machine's)")
