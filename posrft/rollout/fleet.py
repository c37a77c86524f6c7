"""The actors behind a :class:`~posrft.rollout.pool.RolloutPool`: starting them in their
placement-group bundles, replacing the ones that die, letting replacements join, resizing.

A *slot* is one worker position with a stable number (``worker 3`` in logs and metrics). It is
``live`` (answers, holds the latest synced weights) or ``starting`` (actor created, not yet
ready: loading, or waiting for resources, e.g. after its node died). A death is logged by
posrft with the worker number, its pid and node, what it was doing and Ray's cause, counted
(:meth:`Fleet.drain_restarts`: the pool reports the count in the step where it happened) and
answered with a replacement in the same bundle, which joins — receiving and verifying the latest
weights — the next time the pool looks (:meth:`Fleet.admit`). Sampling goes on with the live
slots in the meantime, so a dead node costs throughput, not a step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    OutOfMemoryError,
    RayActorError,
    WorkerCrashedError,
)

from posrft.rollout import placement
from posrft.rollout.buckets import Manifest
from posrft.rollout.fingerprint import Fingerprint, compare

log = logging.getLogger("posrft.rollout")

#: Errors that mean "the worker is gone" (ActorDiedError is a RayActorError), as opposed to
#: an error raised by the work itself, which is never retried.
WORKER_LOST = (RayActorError, WorkerCrashedError, ActorUnavailableError, OutOfMemoryError)


def death_cause(err: BaseException) -> str:
    """One line saying why Ray says the actor is gone (node died, OOM-killed, exited...)."""
    text = str(getattr(err, "error_msg", "") or err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Ray's first line is generic ("The actor died unexpectedly..."); the reason follows it
    because = [ln for ln in lines if "because" in ln.lower()]
    line = (because or lines or [""])[0].split(" Some common causes")[0]
    return f"{type(err).__name__}: {line[:300]}"


@dataclass
class Slot:
    index: int
    actor: Any
    pg: Any | None
    bundle: int
    ready: Any | None  # the ping future while starting; None once live
    started_at: float
    info: dict[str, Any] = field(default_factory=dict)  # the last ping answer
    failures: int = 0  # deaths since this slot last did work
    waiting_logged: bool = False

    @property
    def live(self) -> bool:
        return self.ready is None

    def describe(self) -> str:
        where = f"pid {self.info.get('pid', '?')}"
        if self.info.get("node_ip"):
            where += f" on node {self.info['node_ip']} ({str(self.info.get('node_id', ''))[:8]})"
        return f"rollout worker {self.index} ({where})"


@dataclass
class Weights:
    """The latest sync, kept so that a replacement can be brought to it."""

    refs: list[Any]
    manifest: Manifest
    version: int
    expected: Fingerprint | None  # the learner's hashes, None when not verifying


class Fleet:
    """Slots of ``make_actor(index, options)`` actors in placement groups of ``bundle``."""

    def __init__(self, make_actor: Callable[[int, dict[str, Any]], Any], bundle: dict[str, float],
                 strategy: str, *, startup_timeout_s: float, max_failures: int,
                 wait_log_s: float = 30.0) -> None:
        self.make_actor, self.bundle = make_actor, bundle
        self.strategy = placement.check_strategy(strategy)
        self.startup_timeout_s = startup_timeout_s
        self.max_failures = max_failures
        self.wait_log_s = wait_log_s
        self.slots: list[Slot] = []
        self.groups: list[Any] = []
        self._vacant: list[tuple[Any, int]] = []  # (group, bundle) left by removed slots
        self.weights: Weights | None = None
        self.deaths: list[dict[str, Any]] = []  # every death seen, for inspection
        self._restarts = 0  # since the last drain
        self._next_index = 0

    # ------------------------------------------------------------------ starting
    def add(self, count: int, wait: bool = True) -> list[Slot]:
        """Start ``count`` new slots: first in bundles that removed slots left vacant, the rest
        in a new placement group, reserved before any actor starts (``wait``: fail if it cannot
        be placed within the start-up timeout; otherwise the slots wait for room)."""
        if count < 1:
            return []
        places = self._vacant[:count]
        del self._vacant[:count]
        if len(places) < count:
            pg = placement.reserve(count - len(places), self.bundle, self.strategy,
                                   self.startup_timeout_s if wait else None)
            if pg is not None:
                self.groups.append(pg)
            places += [(pg, b) for b in range(count - len(places))]
        new = []
        for pg, b in places:
            slot = Slot(self._next_index, None, pg, b, None, time.perf_counter())
            self._next_index += 1
            self._spawn(slot)
            new.append(slot)
        self.slots.extend(new)
        return new

    def _spawn(self, slot: Slot) -> None:
        slot.actor = self.make_actor(slot.index, placement.actor_options(slot.pg, slot.bundle))
        slot.ready = slot.actor.ping.remote()
        slot.started_at = time.perf_counter()
        slot.waiting_logged = False

    def wait_all(self, slots: Sequence[Slot], what: str) -> None:
        """Block until ``slots`` are live (first start: a failure here is an error)."""
        try:
            infos = ray.get([s.ready for s in slots], timeout=self.startup_timeout_s)
        except GetTimeoutError:
            raise TimeoutError(f"rollout workers did not start within {self.startup_timeout_s:g} s "
                               f"(cluster resources: {ray.cluster_resources()})") from None
        except RayActorError as err:
            raise RuntimeError(f"a rollout worker failed to load {what}: {err}") from err
        for slot, info in zip(slots, infos):
            slot.info, slot.ready = info, None
            if self.weights is not None:
                self._bring_up_to_date(slot)

    # ------------------------------------------------------------------ views
    def live(self) -> list[Slot]:
        return [s for s in self.slots if s.live]

    def by_index(self, index: int) -> Slot | None:
        return next((s for s in self.slots if s.index == index), None)

    def drain_restarts(self) -> int:
        out, self._restarts = self._restarts, 0
        return out

    # ------------------------------------------------------------------ deaths
    def report_death(self, slot: Slot, actor: Any, err: BaseException, during: str) -> None:
        """``actor`` (which ran in ``slot``) is gone: log it, count it, start a replacement.
        A no-op if the slot already holds a newer actor (the death was reported before)."""
        if slot not in self.slots or slot.actor is not actor:
            return
        cause = death_cause(err)
        slot.failures += 1
        self.deaths.append({"worker": slot.index, "pid": slot.info.get("pid"),
                            "node_id": slot.info.get("node_id"), "during": during,
                            "cause": cause, "time": time.time()})
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        if slot.failures > self.max_failures:
            log.error("%s died during %s: %s; it died %d times in a row without finishing any "
                      "work, so the slot is dropped (%d live worker(s) left)", slot.describe(),
                      during, cause, slot.failures, len(self.live()) - 1)
            self._drop(slot)
            return
        log.warning("%s died during %s: %s; starting a replacement (%d live worker(s) meanwhile)",
                    slot.describe(), during, cause, len(self.live()) - 1)
        self._restarts += 1
        self._spawn(slot)

    def _drop(self, slot: Slot) -> None:
        """Forget ``slot``; its bundle stays reserved for a later :meth:`add` while other slots
        share its placement group, else the group is released."""
        self.slots.remove(slot)
        if slot.pg is None:
            return
        if any(s.pg is slot.pg for s in self.slots):
            self._vacant.append((slot.pg, slot.bundle))
        else:
            placement.release(slot.pg)
            self.groups.remove(slot.pg)
            self._vacant = [(pg, b) for pg, b in self._vacant if pg is not slot.pg]

    # ------------------------------------------------------------------ joining
    def admit(self, block_s: float = 0.0) -> int:
        """Let starting slots whose actor is ready join (weights pushed and verified); waits up
        to ``block_s`` for at least one. Returns how many joined."""
        starting = [s for s in self.slots if not s.live]
        if not starting:
            return 0
        ready, _ = ray.wait([s.ready for s in starting], num_returns=len(starting), timeout=0)
        if not ready and block_s > 0:
            ready, _ = ray.wait([s.ready for s in starting], num_returns=1, timeout=block_s)
        ready_set = set(ready)
        joined = 0
        for slot in starting:
            if slot.ready not in ready_set:
                self._note_waiting(slot)
                continue
            actor = slot.actor
            try:
                slot.info, slot.ready = ray.get(slot.ready), None
                if self.weights is not None:
                    self._bring_up_to_date(slot)
            except WORKER_LOST as err:
                self.report_death(slot, actor, err, "start-up")
                continue
            log.info("%s joined at weights version %d", slot.describe(),
                     self.weights.version if self.weights else 0)
            joined += 1
        return joined

    def _note_waiting(self, slot: Slot) -> None:
        waited = time.perf_counter() - slot.started_at
        if waited > self.wait_log_s and not slot.waiting_logged:
            slot.waiting_logged = True
            log.warning("rollout worker %d has been waiting %.0f s to start (no room for its "
                        "bundle %s: a node gone?); sampling continues on %d live worker(s)",
                        slot.index, waited, self.bundle, len(self.live()))

    def wait_for_live(self, timeout_s: float) -> None:
        """Block until at least one slot is live (all died: wait for a replacement)."""
        deadline = time.perf_counter() + timeout_s
        while not self.live():
            if not self.slots:
                raise RuntimeError("no rollout worker left: every slot died repeatedly while "
                                   "starting (see the log for the causes)")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no rollout worker alive and none started within "
                                   f"{timeout_s:g} s (cluster resources: "
                                   f"{ray.available_resources()} free)")
            self.admit(block_s=min(left, 5.0))

    # ------------------------------------------------------------------ weights
    def _bring_up_to_date(self, slot: Slot) -> None:
        w = self.weights
        res = ray.get(slot.actor.update_weights.remote(w.refs, w.version, w.manifest,
                                                       w.expected is not None))
        if w.expected is not None:
            compare(w.expected, res["fingerprint"], slot.describe())

    def push(self, weights: Weights,
             expected: Callable[[], Fingerprint] | None) -> list[dict[str, Any]]:
        """Send ``weights`` to every live slot; ``expected()`` (the learner's hashes; None: no
        verification) is computed while the workers load. A worker that dies meanwhile is
        replaced (the replacement gets these weights when it joins); one that holds something
        else afterwards raises :class:`~posrft.rollout.fingerprint.WeightSyncError`."""
        verify = expected is not None
        targets = [(s, s.actor) for s in self.live()]
        futures = [a.update_weights.remote(weights.refs, weights.version, weights.manifest,
                                           verify) for _, a in targets]
        weights.expected = expected() if verify else None
        self.weights = weights  # before any replacement starts, so it gets these
        results = []
        for (slot, actor), future in zip(targets, futures):
            try:
                res = ray.get(future)
            except WORKER_LOST as err:
                self.report_death(slot, actor, err, f"weight sync to version {weights.version}")
                continue
            if weights.expected is not None:
                compare(weights.expected, res["fingerprint"], slot.describe())
            results.append(res)
        return results

    # ------------------------------------------------------------------ size
    def resize(self, count: int) -> None:
        """Grow (new slots start in a new placement group and join later) or shrink (starting
        slots go first, then the highest-numbered live ones) to ``count`` slots."""
        if count < 1:
            raise ValueError(f"a rollout pool needs at least 1 worker, got {count}")
        if count > len(self.slots):
            self.add(count - len(self.slots), wait=False)
            return
        victims = sorted(self.slots, key=lambda s: (s.live, -s.index))[:len(self.slots) - count]
        for slot in victims:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
            self._drop(slot)

    def shutdown(self) -> None:
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.slots = []
        for pg in self.groups:
            placement.release(pg)
        self.groups = []
        self._vacant = []
        self.weights = None
