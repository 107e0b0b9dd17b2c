"""Placement groups for the learner and rollout actors, checked against the cluster before anything
waits on them.

The learner ranks share one placement group (``ray.learner_placement``, PACK by default: ranks close
together for their collectives); every rollout actor gets a placement group of its own, so rollout
actors can be added and removed one at a time while training runs. A request that the cluster can
never satisfy fails at once with the config keys to change; one that cannot be satisfied *now* fails
after ``ray.placement_timeout_s`` instead of hanging.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

log = logging.getLogger(__name__)


class PlacementError(RuntimeError):
    """The cluster cannot host the actors the config asks for."""


@dataclass(frozen=True)
class Request:
    """``count`` actors of one kind, each needing ``cpus``/``gpus``; ``keys`` name the config keys."""

    what: str
    count: int
    cpus: float
    gpus: float
    keys: str

    def bundle(self) -> dict[str, float]:
        out = {"CPU": float(self.cpus)}
        if self.gpus:
            out["GPU"] = float(self.gpus)
        return out

    def describe(self) -> str:
        return (f"{self.what}: {self.count} actor(s) x {self.cpus:g} CPU" + (f" + {self.gpus:g} GPU" if self.gpus else "")
                + f" ({self.keys})")


def check_fits(requests: list[Request]) -> None:
    """Raise ``PlacementError`` if the live nodes together, or any single node for one actor, can never
    hold ``requests`` (all of them at once). Does not look at what other jobs use now: the placement
    timeout covers that."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = []
    for res in ("CPU", "GPU"):
        need = sum(r.count * (r.cpus if res == "CPU" else r.gpus) for r in requests)
        have = sum(n.get(res, 0.0) for n in nodes)
        if need > have + 1e-9:
            problems.append(f"{need:g} {res} in all, the cluster has {have:g}")
    for r in requests:
        fits = any(n.get("CPU", 0.0) + 1e-9 >= r.cpus and n.get("GPU", 0.0) + 1e-9 >= r.gpus for n in nodes)
        if r.count and not fits:
            problems.append(f"one {r.what} actor needs {r.cpus:g} CPU + {r.gpus:g} GPU on a single node, and no node has that")
    if problems:
        lines = "\n  ".join(r.describe() for r in requests)
        raise PlacementError(
            "the cluster cannot host this run: " + "; ".join(problems) + f".\nRequested:\n  {lines}\n"
            "Lower those keys, add nodes, or (on an autoscaling cluster whose nodes appear on demand) set "
            "ray.check_resources=false and let ray.placement_timeout_s bound the wait.")


def reserve(name: str, bundles: list[dict[str, float]], strategy: str, timeout_s: float) -> PlacementGroup:
    """A ready placement group, or ``PlacementError`` after ``timeout_s`` (the group is removed)."""
    pg = placement_group(bundles, strategy=strategy, name=name)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        free = ray.available_resources()
        raise PlacementError(
            f"could not place {name} ({len(bundles)} x {bundles[0]}, {strategy}) within {timeout_s:g} s; "
            f"free now: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU. Other jobs may hold the "
            "resources, or an autoscaler is still adding nodes (raise ray.placement_timeout_s).")
    return pg


def in_group(pg: PlacementGroup, index: int = 0) -> PlacementGroupSchedulingStrategy:
    # Child tasks and actors (vLLM's own workers, for one) stay inside the reservation.
    return PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=True)


def release(pg: PlacementGroup | None) -> None:
    if pg is not None:
        try:
            remove_placement_group(pg)
        except Exception as e:  # already gone with a shut-down cluster: nothing left to free
            log.debug("placement group removal: %s", e)
