"""Ray actors that each build a heavy object once (a model, a pipeline) and then take jobs in order.

One actor per GPU (``num_gpus=1``) when the cluster has GPUs, else one per CPU; a local Ray starts when
none is running and no address is given (the environment that selects offline mode and the cache travels).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import PromptblendError

#: Environment passed to Ray workers when this process starts Ray.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PROMPTBLEND_CACHE", "TOKENIZERS_PARALLELISM")


def _original(error: BaseException) -> BaseException:
    """The exception an actor raised, unwrapped from Ray's errors (a failed creation or a failed call)."""
    for _ in range(8):
        cause = getattr(error, "cause", None) or error.__cause__
        if not isinstance(cause, BaseException):
            break
        error = cause
    return error


class _Host:
    """Builds ``cls(*args)`` with torch limited to the actor's CPUs; :meth:`call` runs its methods.

    A named error while building is kept and raised by the first call: Ray passes a call's exception
    back intact but reduces a failed actor creation to a message.
    """

    def __init__(self, cls: type, args: tuple, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.obj, self.error = None, None
        try:
            self.obj = cls(*args)
        except PromptblendError as e:
            self.error = e

    def call(self, method: str, args: tuple) -> Any:
        """``getattr(obj, method)(*args)``."""
        if self.error is not None:
            raise self.error
        return getattr(self.obj, method)(*args)


def ensure_ray(address: str | None = None):
    """The ``ray`` module, connected to ``address`` or to a local instance (started if needed)."""
    import ray

    if not ray.is_initialized():
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env} if env else None)
    return ray


class ActorPool:
    """Actors hosting ``cls(*args)``: one per GPU (``num_gpus=1``) if any, else one per CPU.

    Jobs ``(method, args)`` go to whichever actor is free; results come back in submission order.
    Call :meth:`close` to kill the actors.
    """

    def __init__(self, cls: type, args: tuple = (), address: str | None = None) -> None:
        from ray.util import ActorPool as RayActorPool

        ray = ensure_ray(address)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        count = gpus or cpus
        options = {"num_gpus": 1, "num_cpus": max(1, cpus // count)} if gpus else {"num_cpus": 1}
        host = ray.remote(**options)(_Host)
        self.ray = ray
        self.actors = [host.remote(cls, args, options["num_cpus"]) for _ in range(count)]
        self.pool = RayActorPool(self.actors)

    def map_ordered(self, method: str, jobs: Sequence[tuple], tags: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield ``(tag, result)`` for each job's ``method(*args)``, in the order given."""
        results = self.pool.map(lambda actor, args: actor.call.remote(method, args), list(jobs))
        try:
            yield from zip(tags, results)
        except self.ray.exceptions.RayError as e:
            original = _original(e)
            if isinstance(original, PromptblendError):  # a named error raised in an actor: the CLI's one line
                raise original from None
            raise

    def close(self) -> None:
        """Kill the actors."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
