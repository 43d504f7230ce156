"""Starting or joining Ray for a run: a Ray of our own unless an address is
given, its loggers quiet, and what the cluster cannot give refused at once
(a worker that can never be placed waits silently forever)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Optional

from conlst_ray.pipeline.preflight import UserError, check_resources, check_shared_output

if TYPE_CHECKING:  # for annotations only: a run-time import could point up the layers
    from conlst_ray.config.sections import Config


def quiet_ray_loggers() -> None:
    """Ray's own warnings off (token authentication, deprecations), Ray
    Data's progress reports kept: they are the pseudo-labelling job's progress.
    Ray sets its loggers up when imported, so this runs again after that."""
    import logging

    if os.environ.get("CONLST_RAY_VERBOSE") == "1":
        return
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.INFO)


ADDRESS = re.compile(r"auto|local|(ray://)?[A-Za-z0-9._-]+:\d{1,5}")


def init_ray(address=None, num_cpus=None, cfg: Optional["Config"] = None):
    """Start a local Ray or join ``address``; with ``cfg``, refuse at once
    what the cluster cannot give (a worker that can never be placed waits
    silently forever)."""
    if address is not None and not ADDRESS.fullmatch(address):
        raise UserError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    import ray

    quiet_ray_loggers()
    # no --address: a Ray of our own, not one a `ray start` left on this machine (whose
    # resources preflight did not check); `ray job submit` sets RAY_ADDRESS and is joined
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"
    if cfg is not None and address == "local" and not ray.is_initialized():
        check_resources(cfg, local_resources(num_cpus))  # seconds before a local Ray would be up
    if not ray.is_initialized():
        # workers' output is kept in Ray's session logs; --verbose shows it here
        import logging

        verbose = os.environ.get("CONLST_RAY_VERBOSE") == "1"
        ray.init(address=address, num_cpus=num_cpus if address == "local" else None, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.ERROR)
        quiet_ray_loggers()
    if cfg is not None:
        check_resources(cfg, ray.cluster_resources())
        check_shared_output(cfg)
    return ray


def local_resources(num_cpus=None) -> dict:
    """What a local Ray started here will have: this machine's CPUs (or
    ``num_cpus``) and the GPUs torch sees."""
    import os

    import torch

    return {"CPU": num_cpus or os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
