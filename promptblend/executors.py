"""Run work over shards of items, in this process or on Ray actors, behind one interface.

``open_executor(backend, address)`` gives an :class:`Executor` (``local`` or ``ray``, see
:data:`EXECUTORS`); ``executor.pool(builder)`` builds the worker objects and ``pool.map(method, jobs)``
yields ``obj.method(*job)`` for each job, in job order. A :class:`Builder` is data: a module-level
callable (pickled by reference) and plain arguments, never a model, so a worker builds its own object
(a predictor, a pipeline, a text encoder) once, in its own process. ``local`` builds one object here;
``ray`` one actor per GPU, else one per node with all its CPUs (see :func:`_layout`); on a local instance
the driver builds one too and computes the first jobs while the actors start (see :class:`RayPool`).

The Ray executor owns Ray's life cycle. It connects to ``address`` (or ``RAY_ADDRESS``) when one is
given: nothing listening there is a :class:`ClusterError` (the CLI's one ``error:`` line) before any
output is written. Otherwise it starts a local instance in its own folder under the temp directory,
records the owner process there, and shuts it down (folder included) when the executor closes, on
normal exit, Ctrl-C or SIGTERM. A local instance whose owner was killed (SIGKILL) is cleaned by the
next start: its processes are killed and its folder removed, only when the recorded owner is dead.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ClusterError, ConfigError, PromptblendError
from .owner import owner_alive, owner_tag

log = logging.getLogger(__name__)

#: Environment passed to Ray workers (offline mode, the cache, tokenizer threads).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PROMPTBLEND_CACHE", "TOKENIZERS_PARALLELISM")
#: Prefix of a local Ray instance's folder under the temp directory (short: Ray's socket paths are limited).
RAY_DIR_PREFIX = "pbray-"
OWNER_FILE = "owner"
#: ``0``: a Ray pool's driver never computes jobs; ``1``: it does while the actors start (see :class:`RayPool`).
DRIVER_HELPS_ENV = "PROMPTBLEND_RAY_DRIVER_HELPS"

_CPUS: int | None = None  # set in a worker that was given fewer CPUs than the machine has


def worker_cpus() -> int:
    """CPUs this process may use: its share in a Ray actor, else the CPUs it is allowed to run on."""
    if _CPUS is not None:
        return _CPUS
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Builder:
    """How a worker builds its object: ``target(*args, **kwargs)``; ``target`` a module-level callable or
    class, the arguments plain data (what travels to a Ray actor is this, never a built model)."""

    target: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Any:
        """The worker object."""
        return self.target(*self.args, **self.kwargs)


class Pool:
    """Worker objects built from one :class:`Builder`; :meth:`map` runs jobs on them, results in job order."""

    backend: str = ""
    size: int = 1
    #: Numbers of the jobs this process computed (a Ray pool's driver while its actors start; every job locally).
    on_driver: list[int]

    def map(self, method: str, jobs: Iterable[tuple]) -> Iterator[Any]:
        """``obj.method(*job)`` for each job, in the order given (jobs are read as workers need them)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Executor:
    """Where pools run; a context manager that releases what it started (Ray) on exit."""

    name: str = ""

    def pool(self, builder: Builder) -> Pool:
        """Build the worker objects (a named error while building is raised here)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- local


def _close_obj(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        close()


class LocalPool(Pool):
    """One object built in this process; jobs run one after another as results are asked for."""

    backend = "local"

    def __init__(self, builder: Builder) -> None:
        self.obj = builder.build()
        self.on_driver = []

    def map(self, method: str, jobs: Iterable[tuple]) -> Iterator[Any]:
        call = getattr(self.obj, method)
        for number, job in enumerate(jobs):
            self.on_driver.append(number)
            yield call(*job)

    def close(self) -> None:
        _close_obj(self.obj)


class LocalExecutor(Executor):
    """This process."""

    name = "local"

    def __init__(self, address: str | None = None) -> None:
        del address  # nothing to connect to

    def pool(self, builder: Builder) -> Pool:
        return LocalPool(builder)


# ---------------------------------------------------------------- ray


def _original(error: BaseException) -> BaseException:
    """The exception an actor raised, unwrapped from Ray's errors."""
    for _ in range(8):
        cause = getattr(error, "cause", None) or error.__cause__
        if not isinstance(cause, BaseException):
            break
        error = cause
    return error


class _Host:
    """What a Ray actor runs: builds the object with torch limited to the actor's CPUs; :meth:`call`
    runs its methods. A named error while building is kept and raised by :meth:`call` (Ray reduces a
    failed actor creation to a message, but passes a call's exception back intact)."""

    def __init__(self, builder: Builder, cpus: int) -> None:
        global _CPUS
        import torch

        _CPUS = max(1, cpus)
        torch.set_num_threads(_CPUS)
        self.obj, self.error = None, None
        try:
            self.obj = builder.build()
        except PromptblendError as e:
            self.error = e

    def ready(self) -> None:
        """Raise the building error, if any."""
        if self.error is not None:
            raise self.error

    def call(self, method: str, args: tuple) -> Any:
        """``obj.method(*args)``."""
        self.ready()
        return getattr(self.obj, method)(*args)


def _layout(ray: Any) -> list[dict]:
    """Actor options: one actor per GPU (with its share of the node's CPUs) when the cluster has GPUs,
    else one per node using all of its CPUs, pinned there. One actor per node, not per CPU: every actor
    pays the imports and the model build (on a small CPU model that is most of Ray's overhead), and
    threads plus DataLoader workers use a node's cores as well as that many one-thread actors."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
    with_gpus = any(n["Resources"].get("GPU", 0) >= 1 for n in nodes)
    layout = []
    for node in nodes:
        cpus, gpus = int(node["Resources"]["CPU"]), int(node["Resources"].get("GPU", 0))
        pin = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        if with_gpus:
            layout += [{"num_gpus": 1, "num_cpus": max(1, cpus // max(gpus, 1)), "scheduling_strategy": pin}] * gpus
        else:
            layout.append({"num_cpus": cpus, "scheduling_strategy": pin})
    if not layout:
        raise ClusterError("the Ray cluster has no node with a CPU to run on")
    return layout


class RayPool(Pool):
    """Actors hosting the built object (see :func:`_layout`); jobs go to whichever actor is free (two
    queued per actor, so it never waits for the next), results come back in job order.

    With ``driver_helps`` this process builds the object too and computes jobs itself, in order, while
    the actors start (a fresh actor imports torch and the model's libraries and builds the model: seconds
    that would otherwise be idle); once an actor is ready the driver finishes its job, releases its object
    and leaves the rest to the actors. Without it, the pool waits for every actor to be built. Either way a
    named error while building is raised here, before any job runs (the driver's own build when it helps;
    an error only an actor meets is raised by :meth:`map` once that actor is done building)."""

    backend = "ray"

    def __init__(self, ray: Any, builder: Builder, driver_helps: bool = False) -> None:
        self.ray, self.helper, self.on_driver = ray, None, []
        layout = _layout(ray)
        self.size = len(layout)
        self.actors = [ray.remote(**options)(_Host).remote(builder, options["num_cpus"]) for options in layout]
        self._starting = {actor.ready.remote(): actor for actor in self.actors}  # build result ref -> actor
        try:
            if driver_helps:
                self.helper = builder.build()  # the actors start meanwhile
            else:
                self._get(list(self._starting))
                self._starting = {}
        except BaseException:
            self.close()
            raise

    def _get(self, refs: Any) -> Any:
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as e:
            original = _original(e)
            if isinstance(original, PromptblendError):  # a named error raised in an actor: the CLI's one line
                raise original from None
            raise

    def _ready_actors(self) -> list:
        """Actors whose object was built since the last look (a named build error is raised); the driver's
        object is released as soon as one is."""
        if not self._starting:
            return []
        done, _ = self.ray.wait(list(self._starting), num_returns=len(self._starting), timeout=0)
        self._get(done)
        ready = [self._starting.pop(ref) for ref in done]
        if ready and self.helper is not None:
            _close_obj(self.helper)
            self.helper = None
        return ready

    def map(self, method: str, jobs: Iterable[tuple]) -> Iterator[Any]:
        """Each free actor takes the next job as soon as it is free (no waiting on a slower one); results
        that finish early wait in order, at most two per actor, before more jobs are sent. While no actor
        is ready, the driver's object (``driver_helps``) computes the next job here."""
        pending = enumerate(jobs)
        starting = set(map(id, self._starting.values()))
        idle = [a for a in self.actors if id(a) not in starting] * 2  # two slots per ready actor
        running: dict[Any, tuple[int, Any]] = {}  # result ref -> (job number, actor)
        finished: dict[int, Any] = {}  # job number -> result ref, not yet yielded
        turn, exhausted = 0, False

        def feed() -> None:
            nonlocal exhausted
            while idle and not exhausted and len(finished) < 2 * len(self.actors):
                item = next(pending, None)
                if item is None:
                    exhausted = True
                    return
                actor = idle.pop()
                running[actor.call.remote(method, item[1])] = (item[0], actor)

        while True:
            if turn in finished:
                yield self._get(finished.pop(turn))
                turn += 1
                continue
            idle += self._ready_actors() * 2
            feed()
            if running:
                (ref,), _ = self.ray.wait(list(running), num_returns=1)
                number, actor = running.pop(ref)
                finished[number] = ref
                idle.append(actor)
                continue
            item = None if exhausted or self.helper is None else next(pending, None)
            if item is None:  # every job was handed out and every result yielded
                return
            self.on_driver.append(item[0])
            turn += 1
            yield getattr(self.helper, method)(*item[1])

    def close(self) -> None:
        if self.helper is not None:
            _close_obj(self.helper)
            self.helper = None
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors, self._starting = [], {}


class RayExecutor(Executor):
    """A Ray cluster: the one at ``address`` (or ``RAY_ADDRESS``), else a local instance it starts and owns."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self.ray = _SESSION.acquire(address)

    def pool(self, builder: Builder) -> Pool:
        """Actors built from ``builder``; the driver helps while they start (see :class:`RayPool`) on a
        local instance this process started (same machine, same devices), never on a cluster it joined.
        ``PROMPTBLEND_RAY_DRIVER_HELPS=0`` (or ``1``) decides it for any cluster."""
        helps = os.environ.get(DRIVER_HELPS_ENV, "").strip()
        if helps not in ("", "0", "1"):
            raise ConfigError(f"{DRIVER_HELPS_ENV} must be 0 or 1, got {helps!r}")
        return RayPool(self.ray, builder, driver_helps=helps == "1" if helps else _SESSION.folder is not None)

    def close(self) -> None:
        if self.ray is not None:
            self.ray = None
            _SESSION.release()


class _RaySession:
    """This process's Ray connection, shared by nested executors; shut down when the last one closes."""

    def __init__(self) -> None:
        self.users = 0
        self.folder: Path | None = None  # the owned local instance's folder
        self.external = False  # connected by someone else (ray.init before us): never shut down here
        self._old_sigterm: Any = None

    def acquire(self, address: str | None) -> Any:
        import ray

        if self.users == 0:
            if ray.is_initialized():
                self.external = True
            else:
                self.external = False
                self._start(ray, address or os.environ.get("RAY_ADDRESS") or None)
        self.users += 1
        return ray

    def release(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0 and not self.external:
            self.shutdown()

    def _start(self, ray: Any, address: str | None) -> None:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        options: dict[str, Any] = {
            "include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
            "configure_logging": True, "runtime_env": {"env_vars": env} if env else None,
        }
        if address:
            address = _reachable(address)
            with _quiet_ray():
                try:
                    ray.init(address=address, **options)
                except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
                    raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(e)}") from None
            return
        sweep_orphans()
        folder = Path(tempfile.mkdtemp(prefix=RAY_DIR_PREFIX))
        (folder / OWNER_FILE).write_text(owner_tag(), encoding="utf-8")
        self.folder = folder
        self._catch_sigterm()
        try:
            with _quiet_ray():
                ray.init(_temp_dir=str(folder), **options)
        except BaseException:
            self.shutdown()
            raise
        log.info("started a local Ray instance in %s", folder)

    def _catch_sigterm(self) -> None:
        """SIGTERM raises SystemExit in the main thread, so ``finally`` blocks and :meth:`shutdown` run."""
        if threading.current_thread() is not threading.main_thread():
            return

        def _terminate(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, _terminate)

    def shutdown(self) -> None:
        """Disconnect; an owned local instance is stopped and its folder removed."""
        import ray

        ray.shutdown()
        if self._old_sigterm is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if self.folder is not None:
            _kill_instance(self.folder)  # what ray.shutdown leaves behind (normally nothing)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.users = 0


_SESSION = _RaySession()


@atexit.register
def _shutdown_at_exit() -> None:
    if _SESSION.folder is not None:
        _SESSION.shutdown()


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's start-up chatter (token authentication, 'Started a local Ray instance') off the console."""
    loggers = [logging.getLogger(n) for n in ("ray", "ray._private", "ray._private.worker")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _reachable(address: str) -> str:
    """``address`` as ``HOST:PORT`` (``auto``: the cluster ``ray start`` made on this machine), checked to be
    listening; else :class:`ClusterError`, quickly (no Ray retries, never someone else's unnamed instance)."""
    given = address
    if address == "auto":
        from ray._private.services import find_bootstrap_address

        address = find_bootstrap_address(None)
        if not address:
            raise ClusterError("--ray-address auto: no Ray cluster is running on this machine "
                               "(start one with `ray start --head`, or leave --ray-address out for a local one)")
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {given!r} is not HOST:PORT, ray://HOST:PORT or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except OSError as e:
        raise ClusterError(f"no Ray cluster is listening at {given!r} ({host}:{port}: {e.strerror or e})") from None
    return address


def _instance_processes(folder: Path) -> list:
    """The processes of the local Ray instance in ``folder``: those naming it on their command line or
    holding a file open in it (Ray's workers and agents rename themselves, but log there), and their children."""
    import psutil

    key = str(folder)
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(key in part for part in proc.info["cmdline"] or ()) or any(
                    f.path.startswith(key) for f in proc.open_files()):
                found[proc.pid] = proc
                for child in proc.children(recursive=True):
                    found[child.pid] = child
    found.pop(os.getpid(), None)
    return list(found.values())


def _kill_instance(folder: Path) -> int:
    """Kill the processes of the Ray instance in ``folder``; return how many."""
    import psutil

    procs = _instance_processes(folder)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


def sweep_orphans(tmp: str | Path | None = None) -> list[Path]:
    """Kill the local Ray instances (under the temp directory) whose recorded owner is dead, remove their
    folders, and return those folders. Instances of live owners, and any other Ray, are left alone."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(f"{RAY_DIR_PREFIX}*"):
        try:
            tag = (folder / OWNER_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if not tag or owner_alive(tag):
            continue
        killed = _kill_instance(folder)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the Ray instance of a killed run (%d processes) in %s", killed, folder)
        removed.append(folder)
    return removed


# ---------------------------------------------------------------- registry

#: The executors by backend name (``--backend``).
EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}
BACKENDS = tuple(EXECUTORS)


def open_executor(backend: str = "local", address: str | None = None) -> Executor:
    """The executor ``backend`` (``local`` or ``ray``), connected: see the module's docstring."""
    if backend not in EXECUTORS:
        raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if address and backend != "ray":
        raise ConfigError(f"--ray-address needs --backend ray (the backend is {backend})")
    return EXECUTORS[backend](address)
