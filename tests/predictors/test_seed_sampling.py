"""Several seeds per prompt: an epoch reads one image per prompt, a different seed each epoch, over ranks
and shard streams; validation holds out whole prompts and keeps one fixed image each."""

from __future__ import annotations

import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from predictors.training.data import (
    BatchPlan,
    PairData,
    data_split,
    prompt_groups,
    several_seeds,
)

SEEDS = 3


def _prompts(n_prompts: int, seeds: int = SEEDS) -> np.ndarray:
    """Prompt ids of a generated set's rows: each prompt's seeds are consecutive rows."""
    return np.repeat(np.arange(n_prompts), seeds)


def _epoch_rows(plans: list[BatchPlan], epoch: int) -> list[int]:
    """Every row any rank reads in ``epoch`` (keys ``epoch * n + row``)."""
    plan = plans[0]
    steps = range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch)
    keys = [k for p in plans for s in steps for m in p.micro_batches(s) for k in m]
    assert all(k // plan.n == epoch for k in keys)
    return [k % plan.n for k in keys]


@pytest.mark.parametrize("world, groups, parts", [(1, (), 1), (2, (), 1), (2, (12, 9, 15, 12), 2), (1, (30, 18), 1)])
def test_each_prompt_once_per_epoch_with_a_new_seed(world, groups, parts):
    prompts = _prompts(16)
    plans = [BatchPlan(48, 4, seed=7, world=world, rank=r, groups=groups, parts=parts, prompts=prompts)
             for r in range(world)]
    picked = []
    for epoch in range(4):
        rows = _epoch_rows(plans, epoch)
        assert len(rows) == len(set(rows))  # no image twice in an epoch, over all ranks
        assert len(set(prompts[rows])) == len(rows)  # one image per prompt
        if parts == 1:
            assert sorted(prompts[rows]) == list(range(16))  # and every prompt (no stream tail dropped)
        picked.append(dict(zip(prompts[rows], np.asarray(rows) % SEEDS)))
    for a, b in itertools.pairwise(picked):  # the seed of a prompt changes from one epoch to the next
        assert all(a[p] != b[p] for p in set(a) & set(b))
    again = BatchPlan(48, 4, seed=7, world=world, rank=0, groups=groups, parts=parts, prompts=prompts)
    assert [again.micro_batches(s) for s in range(6)] == [plans[0].micro_batches(s) for s in range(6)]
    other = BatchPlan(48, 4, seed=8, world=world, rank=0, groups=groups, parts=parts, prompts=prompts)
    assert [other.micro_batches(s) for s in range(6)] != [plans[0].micro_batches(s) for s in range(6)]


def test_without_prompt_ids_every_image_is_read():
    plan = BatchPlan(48, 4, seed=7)
    assert plan.steps_per_epoch == 12 and sorted(_epoch_rows([plan], 1)) == list(range(48))


def test_split_holds_out_whole_prompts_and_one_image_each():
    prompts = [f"prompt {i}" for i in np.repeat(np.arange(20), SEEDS)]
    data = PairData([str(i) for i in range(60)], prompts, None, None, np.zeros((60, 384), np.float32), ("x", None))
    assert several_seeds(prompt_groups(prompts)) and not several_seeds(prompt_groups(prompts[:-1]))
    train, val, on = data_split(data, 0.25, seed=0)
    assert on and len(train) == 45 and len(val) == 5
    assert not {prompts[i] for i in train} & {prompts[i] for i in val}
    assert all(i % SEEDS == 0 for i in val)  # the first (fixed) image of each held-out prompt
    train, val, on = data_split(data, 0.25, seed=0, one_per_prompt=False)
    assert not on and len(val) == 15  # off: the row split as before
    uneven = PairData(data.ids[:-1], prompts[:-1], None, None, data.targets[:-1], ("x", None))
    assert data_split(uneven, 0.25, seed=0)[2] is False  # repeated prompts in uneven numbers: not a seed set


def _seeds(folder: Path) -> dict[str, int]:
    """Key -> seed from the shards' ``.json`` members."""
    out = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    out[m.name[:-5]] = json.loads(tar.extractfile(m).read())["seed"]
    return out


def test_a_trainer_on_a_generated_set_sees_each_prompt_once_per_epoch(tmp_path):
    from experiments.generate.__main__ import main
    from predictors.clip_regressor.model import RegressorTask
    from predictors.clip_regressor.train import PRESETS
    from predictors.training import read_metrics, train
    from promptblend.imagesets import open_image_set

    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("".join(f"a {c} {t}\n" for c in ("red", "blue") for t in ("cat", "car", "lake", "tree")))
    out = tmp_path / "set"
    assert main(["--prompts", str(prompt_file), "--out", str(out), "--n", "8", "--model", "tiny", "--scheduler",
                 "dpm++", "--steps", "2", "--render-size", "32", "--size", "24", "--format", "webp",
                 "--seeds-per-prompt", str(SEEDS), "--shard-size", "12", "--batch-size", "6", "--quiet"]) == 0
    image_set = open_image_set(out)
    seeds, prompts = _seeds(out), dict(zip(image_set.ids, image_set.prompt_list()))
    seen: list[tuple[int, str]] = []

    class Recorded:
        keyed = True

        def __init__(self, dataset, ids) -> None:
            self.dataset, self.ids = dataset, ids

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, key: int):
            seen.append((int(key) // len(self.ids), self.ids[int(key) % len(self.ids)]))
            return self.dataset[int(key) % len(self.ids)]

    class RecordingTask(RegressorTask):
        def dataset(self, data, idx, cfg, train):
            dataset = super().dataset(data, idx, cfg, train)
            return Recorded(dataset, [data.ids[i] for i in idx]) if train else dataset

    model = train(RecordingTask, PRESETS, out, None, tmp_path / "model", "tiny", epochs=3, batch_size=4,
                  val_frac=0.25, num_workers=0, progress=False)
    config = json.loads((model / "config.json").read_text())
    assert config["data"] == {"n_pairs": 24, "n_train": 18, "n_val": 2, "one_image_per_prompt": True}
    by_epoch = [[(prompts[i], seeds[i]) for e, i in seen if e == epoch] for epoch in range(3)]
    for rows in by_epoch:  # the 6 training prompts, each once
        assert len(rows) == 6 and len({p for p, _ in rows}) == 6
    assert {p for p, _ in by_epoch[0]} == {p for p, _ in by_epoch[2]}
    for a, b in itertools.pairwise(by_epoch):
        assert all(dict(a)[p] != dict(b)[p] for p in dict(a))  # another seed of the prompt each epoch
    assert read_metrics(model)[-1]["val_score"] is not None
