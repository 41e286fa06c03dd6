"""Install promptblend offline from a wheel folder into a fresh venv, then predictors -> blend -> submission.

What a competitor does in the competition's offline notebook: attach a folder of wheels, install
with ``pip install --no-index --find-links WHEELS promptblend``, set ``HF_HUB_OFFLINE=1`` and run
the predictors, ``ensemble.blend`` and the submission check. The wheel folder is built here without
a network: promptblend's own wheel by ``pip wheel --no-deps``, and each dependency (the closure of
promptblend's requirements) repacked as a wheel from this venv's installed distribution (its files
as listed in its RECORD, with a fresh RECORD of sha256 hashes; the same bytes ``pip download``
would have fetched, minus compiled ``.pyc`` and console scripts, which pip regenerates).

Slow (several GB of torch and CUDA libraries are zipped and installed again): ``-m slow``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(requirements: list[str]) -> list[metadata.Distribution]:
    """Installed distributions that ``requirements`` need, transitively, with the extras they ask for
    (requirements for other platforms, and extras nobody asks for, are skipped)."""
    from packaging.requirements import Requirement

    todo = [(r, "") for r in requirements]
    dists: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = _canonical(req.name)
        dist = dists.setdefault(key, metadata.distribution(req.name))
        for wanted in ("", *sorted(req.extras)):
            if (key, wanted) not in done:
                done.add((key, wanted))
                todo += [(r, wanted) for r in dist.requires or []]
    return list(dists.values())


def _tags(dist: metadata.Distribution) -> str:
    """The compressed tag set of the wheel ``dist`` was installed from (``Tag:`` lines of its WHEEL file)."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise AssertionError(f"{dist.metadata['Name']} was not installed from a wheel (no Tag in WHEEL)")
    parts = list(zip(*(t.split("-") for t in tags)))
    return "-".join(".".join(sorted(set(p))) for p in parts)


def repack(dist: metadata.Distribution, folder: Path) -> Path:
    """A wheel of an installed distribution: its RECORD's files (no .pyc, no scripts) and a new RECORD."""
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = folder / f"{name}-{dist.version}-{_tags(dist)}.whl"
    record, info = [], None
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as whl:
        for f in dist.files or []:
            parts = f.parts
            if parts[0] == ".." or "__pycache__" in parts or f.suffix == ".pyc":
                continue
            if parts[0].endswith(".dist-info"):
                info = parts[0]
                if f.name in SKIP_INFO:
                    continue
            src = Path(dist.locate_file(f))
            if not src.is_file():
                continue
            h, size = hashlib.sha256(), 0
            with open(src, "rb") as fin, whl.open(f.as_posix(), "w", force_zip64=True) as fout:
                for block in iter(lambda: fin.read(1 << 22), b""):
                    h.update(block)
                    fout.write(block)
                    size += len(block)
            digest = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
            record.append(f"{f.as_posix()},sha256={digest},{size}")
        record.append(f"{info}/RECORD,,")
        whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def build_wheel_folder(folder: Path) -> list[Path]:
    """promptblend's wheel and its dependencies' wheels, made without a network."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder.parent / "source"  # a clean copy: the build leaves build/ and egg-info behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".*", "tests", "benchmarks", "build", "*.egg-info", "__pycache__", "*-out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), str(source)],
                   check=True, capture_output=True, env={**os.environ, "PIP_NO_INDEX": "1"})
    requirements = metadata.distribution("promptblend").requires or []
    return [repack(d, folder) for d in dependency_closure(requirements)] + sorted(folder.glob("promptblend-*.whl"))


def _offline_env(home: Path) -> dict[str, str]:
    """No pip configuration (no index, no extra find-links), no hub, caches in ``home``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "HF_"))}
    return {**keep, "PIP_CONFIG_FILE": os.devnull, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HOME": str(home), "PROMPTBLEND_CACHE": str(home / "cache"), "PATH": os.environ.get("PATH", "")}


def _run(cmd: list, cwd: Path, env: dict) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_offline_install_then_predictors_blend_submission(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "predictors"))
    from shapes import make_shapes

    try:
        wheels = tmp_path / "wheels"
        built = build_wheel_folder(wheels)
        assert any(p.name.startswith("torch-") for p in built) and any(p.name.startswith("promptblend-") for p in built)
        env = _offline_env(tmp_path / "home")
        venv = tmp_path / "venv"
        _run([sys._base_executable, "-m", "venv", venv], tmp_path, env)
        py = venv / "bin" / "python"
        work = tmp_path / "notebook"
        work.mkdir()
        _run([py, "-m", "pip", "install", "--no-index", "--no-compile", "--find-links", wheels, "promptblend"], work, env)
        where = _run([py, "-c", "import promptblend, ensemble, predictors; print(promptblend.__file__, predictors.__file__)"],
                     work, env)
        assert all(Path(p).is_relative_to(venv) for p in where.split()), where  # the installed copy, not this checkout

        make_shapes(work / "val", 24, seed=1)
        make_shapes(work / "test", 12, seed=2)
        (work / "test" / "prompts.csv").unlink()  # the hidden test set has no prompts
        for split in ("val", "test"):
            for predictor in ("captioner-tiny", "clip-regressor-tiny"):
                _run([py, "-m", "predictors.run", predictor, "--images", work / split, "--out", work / f"runs-{split}",
                      "--quiet", "--workers", "0"], work, env)
        _run([py, "-m", "ensemble.tune", "--runs", work / "runs-val", "--truth", work / "val" / "prompts.csv",
              "--trials", "5", "--folds", "0", "--out", work / "tuned", "--no-progress", "--no-report"], work, env)
        printed = _run([py, "-m", "ensemble.blend", "--blend", work / "tuned", "--runs", work / "runs-test",
                        "--images", work / "test", "--out", work / "submission.csv"], work, env)
        assert "12 images blended from" in printed
        checked = _run([py, "-m", "ensemble.submission", "check", work / "submission.csv", "--images", work / "test"], work, env)
        assert checked.startswith("ok: 12 images")
    finally:
        for big in ("wheels", "venv"):  # several GB each
            shutil.rmtree(tmp_path / big, ignore_errors=True)
