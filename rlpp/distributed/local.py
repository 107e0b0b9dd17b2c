"""Keep a private, single-machine Ray instance on the loopback interface.

Ray 2.60 turns a node address of 127.0.0.1 into the machine's outward address
(``ray._private.services.resolve_ip_for_localhost``), so ``ray.init(_node_ip_address="127.0.0.1")`` and
even ``ray start --head --node-ip-address=127.0.0.1`` still bind the GCS, raylets, workers and agents to
every interface. Ray's own single-machine mode (its default on macOS and Windows,
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) uses 127.0.0.1 as the node address, and every server then
listens on loopback only; such a head refuses worker nodes, which a private instance never has.
"""

from __future__ import annotations

import os
import sys

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_local_ray_on_loopback() -> None:
    """Call before starting a private Ray instance: the processes it starts inherit the setting, and
    this process's Ray (if already imported) reads it now."""
    os.environ[SINGLE_MACHINE_ENV] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # read at import: set the imported value too
        constants.ENABLE_RAY_CLUSTER = False


def init_ray(cfg) -> None:
    """Join the cluster a run is meant for (``ray.address``, or a Ray job's ``RAY_ADDRESS``), or start a
    private local instance on loopback; nothing if Ray is already initialized in this process."""
    import ray

    if ray.is_initialized():
        return
    if cfg.ray.address:
        ray.init(address=cfg.ray.address)
    elif os.environ.get("RAY_ADDRESS"):  # set for the entrypoint of a submitted Ray job
        ray.init()
    else:  # a private local instance, on loopback only
        keep_local_ray_on_loopback()
        ray.init(num_cpus=cfg.ray.num_cpus or None, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")


def free_endpoint() -> tuple[str, int]:
    """This node's address (Ray's node address, loopback without Ray) and a free port on it, for a
    rendezvous whose store the calling process hosts: rank 0 of the learners' process group, and of the
    NCCL weight-transfer group (``rlpp.sync.nccl``)."""
    import socket

    import ray

    address = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    return address, port
