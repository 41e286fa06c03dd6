"""Make an image-prompt set with Stable Diffusion: WebDataset shards in img2dataset's layout.

``generate_set(prompts, out, GenerateConfig(...))`` writes ``out/images-000000.tar...`` (``KEY.png`` or
``KEY.webp``, ``KEY.txt`` the prompt, ``KEY.json`` seed and settings), ``prompts.csv`` and, when every shard
is done, ``sizes.json`` (samples per shard) and ``manifest.json``. The set's fingerprint (in the manifest) is a hash of its images' keys, prompts,
seeds and every setting that shapes the pixels (scheduler, steps, guidance, render and stored size, format,
precision...): a rerun into the same folder with anything else is refused (:class:`SetMismatchError`).

Resume rule: ``plan.json`` exists only while a set is unfinished (written with the first finished shard,
removed when the manifest is written); a rerun with the same arguments checks every finished shard (keys
and last image, a truncated one is rebuilt with a warning) and makes only what is missing. A command that
fails before its first shard leaves nothing; one that fails later leaves a resumable set, and its error
says which (:func:`promptblend.atomic.output_folder`). Same settings, batch size, device and thread count give the same bytes; another batch size or
thread count may move a few pixels by a level or two (CPU summation order), never the recipe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from promptblend import atomic
from promptblend.errors import (
    ConfigError,
    ModelNotFoundError,
    PromptblendError,
    SetMismatchError,
)
from promptblend.executors import BACKENDS, Builder, Executor, open_executor
from promptblend.imagesets.shards import SIZES_JSON, shard_name, write_shard

from .pipeline import FORMATS, ShardMaker, load_pipeline
from .prompts import choose_prompts
from .schedulers import DEFAULT_SCHEDULER, DEFAULT_STEPS, SCHEDULERS, check_scheduler

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"
SHARD_PREFIX = "images"
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
#: Settings that change speed only: not recorded per sample, not in the fingerprint.
RUNTIME_ONLY = ("device", "batch_size", "shard_size", "sdpa", "channels_last", "compile")

__all__ = [
    "BACKENDS", "DEFAULT_MODEL", "FORMATS", "SCHEDULERS", "GenerateConfig", "ShardMaker", "choose_prompts", "generate_set",
    "load_pipeline", "plan_items", "resolve_model", "set_fingerprint",
]


@dataclass(frozen=True)
class GenerateConfig:
    """Settings of a set: those that shape the images (recorded in each ``KEY.json`` and the manifest) and
    the runtime ones (:data:`RUNTIME_ONLY`). ``render_size`` None renders at ``size``; ``fp16`` None: on
    with CUDA, off on CPU (fp16 on CPU is refused)."""

    model: str = DEFAULT_MODEL
    seeds_per_prompt: int = 1
    scheduler: str = DEFAULT_SCHEDULER
    karras: bool = False
    steps: int = DEFAULT_STEPS
    guidance: float = 7.5
    size: int = 512
    render_size: int | None = None
    format: str = "png"
    negative_prompt: str = ""
    fp16: bool | None = None
    shard_size: int = 256
    batch_size: int = 8
    device: str | None = None
    sdpa: bool = True
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.render_size is None:
            object.__setattr__(self, "render_size", self.size)

    def check(self) -> None:
        """Refuse settings no pipeline can use (before any work)."""
        check_scheduler(self.scheduler, self.karras)
        if self.format not in FORMATS:
            raise ConfigError(f"unknown --format {self.format!r}; use one of {', '.join(FORMATS)}")
        if self.render_size % 8 or self.render_size < 8:
            raise ConfigError(f"--render-size must be a positive multiple of 8 (got {self.render_size})")
        if not 1 <= self.size <= self.render_size:
            raise ConfigError(f"--size {self.size} must be between 1 and --render-size {self.render_size} "
                              "(images are only ever reduced)")
        for name in ("seeds_per_prompt", "steps", "shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(self, name)})")

    def resolved(self) -> GenerateConfig:
        """Checked, with the device picked and ``fp16`` decided (refused on a CPU: its kernels are float32)."""
        from promptblend.device import resolve_device

        self.check()
        device = resolve_device(self.device)
        cuda = device.startswith("cuda")
        if self.fp16 and not cuda:
            raise ConfigError(f"--fp16 needs a CUDA device (the device is {device}); leave it out on CPU")
        return replace(self, device=device, fp16=cuda if self.fp16 is None else self.fp16)

    def settings(self) -> dict:
        """What a sample's ``.json`` records besides its seed: everything but :data:`RUNTIME_ONLY`."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}

    def runtime(self) -> dict:
        """The speed-only settings (recorded in the manifest only)."""
        return {k: getattr(self, k) for k in RUNTIME_ONLY}


def resolve_model(model: str) -> str:
    """``tiny``, an existing local folder, or a hub id found in the local cache; else :class:`ModelNotFoundError`."""
    from experiments.sd_tiny import TINY

    if model == TINY or Path(model).expanduser().is_dir():
        return model
    if model.startswith((".", "/", "~")) or model.count("/") != 1:  # a path, not an ``owner/name`` hub id
        raise ModelNotFoundError(f"model path not found: {model} (give a diffusers folder, a hub id or 'tiny')")
    from huggingface_hub import try_to_load_from_cache

    if os.environ.get("HF_HUB_OFFLINE") and not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        raise ModelNotFoundError(f"model {model} is not in the local Hugging Face cache and the hub is offline; "
                                 "pass --model PATH (a diffusers folder) or --model tiny")
    return model


def prompt_seed(prompt: str, index: int, salt: int = 0) -> int:
    """Seed of a prompt's ``index``-th image: a 63-bit hash of the text and index (``salt`` > 0 only to
    step past a collision), so the same prompt gets the same images in any set."""
    digest = hashlib.sha256(f"{salt}\0{index}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def plan_items(prompts: Sequence[str], seeds_per_prompt: int) -> list[dict]:
    """One ``{"key", "prompt", "seed", "seed_index"}`` per image; keys are zero-padded row numbers
    (img2dataset style). Seeds are unique within the set: a repeat (a repeated prompt, or a hash
    collision) is re-hashed with the next salt."""
    seen: set[int] = set()
    items = []
    for p in prompts:
        for s in range(seeds_per_prompt):
            salt, seed = 0, prompt_seed(p, s)
            while seed in seen:
                salt += 1
                seed = prompt_seed(p, s, salt)
            seen.add(seed)
            items.append({"key": f"{len(items):09d}", "prompt": p, "seed": seed, "seed_index": s})
    return items


def set_fingerprint(items: list[dict], config: GenerateConfig) -> str:
    """Hash of what the set holds: its samples' keys, prompts and seeds, the settings and the shard size."""
    blob = json.dumps([items, config.settings(), config.shard_size], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record(out: Path) -> dict | None:
    """What a folder says it holds: ``plan.json`` (unfinished) or ``manifest.json`` (finished), else None."""
    for name in (PLAN_FILE, MANIFEST_FILE):
        if (out / name).is_file():
            try:
                return json.loads((out / name).read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                return {}
    return None


def _check_record(out: Path, record: dict | None, fingerprint: str, config: GenerateConfig, n_images: int) -> None:
    """Refuse to resume or extend a set made differently, naming the settings that differ."""
    if record is None or record.get("fingerprint") == fingerprint:
        return
    old = record.get("settings") or {}
    diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in config.settings().items() if old.get(k) != v]
    if not diff and record.get("shard_size", config.shard_size) != config.shard_size:
        diff = [f"shard_size {record.get('shard_size')} -> {config.shard_size}"]
    what = (f"other settings ({'; '.join(diff)})" if diff
            else f"other prompts ({record.get('n_images', '?')} images there, {n_images} asked)")
    raise SetMismatchError(f"{out} holds a set made with {what}; a set is never mixed: use a new --out, "
                           "or the same arguments to resume it")


def _shard_ok(path: Path, items: list[dict]) -> bool:
    """Whether a finished shard holds exactly ``items``' keys and its last image decodes (a truncated tar fails)."""
    from promptblend.imagesets.shards import open_shard_set

    try:
        shard = open_shard_set(path)
        if shard.ids != [it["key"] for it in items]:
            return False
        shard.load(len(items) - 1)
    except PromptblendError:
        return False
    return True


def _progress(total: int, done: int, enabled: bool):
    """A per-image progress bar with rate and time left."""
    from promptblend.progress import progress_bar

    return progress_bar(total=total, initial=done, desc="generate", unit="img", disable=not enabled, smoothing=0.1)


def generate_set(prompts: Sequence[str], out: str | Path, config: GenerateConfig, backend: str = "local",
                 ray_address: str | None = None, progress: bool = True, extra_manifest: dict | None = None) -> dict:
    """Generate one image per (prompt, seed) into shards under ``out``; finished shards are kept. Returns the manifest."""
    config = config.resolved()
    resolve_model(config.model)
    out = atomic.output_target(out, folder=True)  # a file or device at --out: refused before any work
    items = plan_items(prompts, config.seeds_per_prompt)
    fingerprint = set_fingerprint(items, config)
    _check_record(out, _record(out), fingerprint, config, len(items))
    executor = open_executor(backend, ray_address)  # no cluster there: a named error, nothing written
    shards = [items[s : s + config.shard_size] for s in range(0, len(items), config.shard_size)]
    todo = []
    for i, shard_items in enumerate(shards):
        path = out / shard_name(SHARD_PREFIX, i)
        if path.is_file() and _shard_ok(path, shard_items):
            continue
        if path.is_file():
            log.warning("%s is truncated or does not hold its planned samples: rebuilding it", path)
        todo.append(i)
    plan = {"fingerprint": fingerprint, "settings": config.settings(), "shard_size": config.shard_size,
            "n_images": len(items), "n_prompts": len(prompts)}
    made: list[int] = []
    on_driver = 0
    bar = _progress(len(items), len(items) - sum(len(shards[i]) for i in todo), progress)
    t0 = time.perf_counter()

    def store(i: int, samples: list[dict]) -> None:
        if not made:
            _start_plan(out, items, plan)
        write_shard(out / shard_name(SHARD_PREFIX, i), samples)
        made.append(i)

    try:  # a failure leaves a resumable set (a plan or manifest beside finished shards) or nothing
        with atomic.output_folder(out, _resumable), executor:
            if todo:
                on_driver = _make_shards(executor, config, [(i, shards[i]) for i in todo], store, bar.update)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    manifest = {
        "n_images": len(items), "n_prompts": len(prompts), "shards": len(shards), "shards_made": len(todo),
        "pattern": f"{SHARD_PREFIX}-{{{0:06d}..{len(shards) - 1:06d}}}.tar", "fingerprint": fingerprint,
        "settings": config.settings(), "shard_size": config.shard_size, "runtime": config.runtime(),
        "backend": backend, "images_on_driver": on_driver, "wall_time_s": round(wall, 3),
        "images_per_s": round(sum(len(shards[i]) for i in todo) / wall, 3) if todo and wall > 0 else None,
        **(extra_manifest or {}),
    }
    sizes = {shard_name(SHARD_PREFIX, i): len(shard) for i, shard in enumerate(shards)}
    atomic.write_text(out / SIZES_JSON, json.dumps(sizes, indent=1))  # readers check counts against it
    atomic.write_text(out / MANIFEST_FILE, json.dumps(manifest, indent=2, default=str))
    (out / PLAN_FILE).unlink(missing_ok=True)  # a finished set's record is its manifest
    return manifest


def _start_plan(out: Path, items: list[dict], plan: dict) -> None:
    """With the first finished shard: ``prompts.csv`` and ``plan.json`` (the resume record; the set is
    unfinished again, so an old manifest goes)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"imgId": [it["key"] for it in items], "prompt": [it["prompt"] for it in items]})
    with atomic.atomic_path(out / "prompts.csv", ".csv") as tmp:
        frame.to_csv(tmp, index=False)
    atomic.write_text(out / PLAN_FILE, json.dumps(plan, indent=2))
    (out / MANIFEST_FILE).unlink(missing_ok=True)


def _resumable(out: Path) -> bool:
    """Whether a failed run left work to resume: a plan (unfinished set) or manifest beside its shards."""
    return (out / PLAN_FILE).is_file() or (out / MANIFEST_FILE).is_file()


def _make_shards(executor: Executor, config: GenerateConfig, jobs: list[tuple[int, list[dict]]],
                 store: Callable[[int, list[dict]], None], tick: Callable[[int], object]) -> int:
    """Make the shards on the executor's workers (each builds the pipeline once), one batch of images per
    job, so progress moves per batch on any backend; a shard is stored once all its batches are back.
    Returns how many images this process made (all locally; on Ray, those made while actors started)."""
    size = config.batch_size
    batches = [(i, items[s : s + size]) for i, items in jobs for s in range(0, len(items), size)]
    expected = {i: len(items) for i, items in jobs}
    held: dict[int, list[dict]] = {}
    with executor.pool(Builder(ShardMaker, (config,))) as pool:
        for (i, _), samples in zip(batches, pool.map("make", [(batch,) for _, batch in batches])):
            held.setdefault(i, []).extend(samples)
            tick(len(samples))
            if len(held[i]) == expected[i]:
                store(i, held.pop(i))
        return sum(len(batches[k][1]) for k in pool.on_driver)
