"""Where rollout workers run: one placement-group bundle per worker.

A placement group reserves every worker's resources at once (gang scheduling): either all of
them fit, or :func:`reserve` fails within its timeout naming what was asked for and what the
cluster has, instead of workers waiting forever. Strategies are Ray's:

* ``PACK`` (default): as few nodes as possible (colocated with each other);
* ``SPREAD``: across nodes where possible (one per node when there are enough nodes);
* ``STRICT_PACK`` / ``STRICT_SPREAD``: the same as hard constraints;
* ``none``: no placement group, plain actor scheduling.

A worker that dies is replaced in its own bundle; when a whole node is gone, Ray moves the
bundle to a node with room, or the replacement waits until one appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD", "none")


def worker_bundle(num_cpus: float, num_gpus: float,
                  resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """The resources of one worker: CPUs, GPUs (if any) and custom resources (e.g. a node
    label such as ``{"rollout_node": 0.01}``)."""
    bundle = {"CPU": float(num_cpus)}
    if num_gpus > 0:
        bundle["GPU"] = float(num_gpus)
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"worker_resources: set {name} with worker_num_{name.lower()}s, not "
                             f"as a custom resource")
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
            raise ValueError(f"worker_resources[{name!r}] must be a number > 0, got {amount!r}")
        bundle[name] = float(amount)
    return bundle


def check_strategy(strategy: str | None) -> str:
    strategy = "none" if strategy is None else strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"placement_strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return strategy


def reserve(num_bundles: int, bundle: Mapping[str, float], strategy: str,
            timeout_s: float | None) -> Any | None:
    """A placement group of ``num_bundles`` copies of ``bundle`` (None for ``none``), ready:
    ``TimeoutError`` (the group removed again) if the cluster cannot place it within
    ``timeout_s``; ``timeout_s=None`` returns at once (actors placed in it wait for it)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if check_strategy(strategy) == "none":
        return None
    pg = placement_group([dict(bundle) for _ in range(num_bundles)], strategy=strategy)
    if timeout_s is None:
        return pg
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise TimeoutError(
            f"could not place {num_bundles} rollout worker(s) of {dict(bundle)} each with "
            f"strategy {strategy} within {timeout_s:g} s; the cluster has "
            f"{ray.cluster_resources()} in total and {ray.available_resources()} free")
    return pg


def actor_options(pg: Any | None, bundle_index: int) -> dict[str, Any]:
    """``.options(...)`` that put an actor into bundle ``bundle_index`` of ``pg``."""
    if pg is None:
        return {}
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
        placement_group=pg, placement_group_bundle_index=bundle_index)}


def release(pg: Any | None) -> None:
    """Remove ``pg`` (its bundles' resources go back to the cluster); quiet if already gone."""
    if pg is None:
        return
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(pg)
    except Exception:  # noqa: BLE001 - the cluster or the group is already gone
        pass
