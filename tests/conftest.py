"""Shared fixtures. Ray is started once per session, on loopback only, and shut down at the end."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs bound to 127.0.0.1 (works with token auth on or off)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests where no CUDA device is present (torch is imported only if one exists)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)
