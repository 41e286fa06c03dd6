"""ClipCap's training task: NLL of the prompt tokens given the CLIP prefix; held-out score of greedy captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptblend.text import encode

from ..training import PairData, TrainConfig, TrainTask
from . import model as cc


class ClipCapTask(TrainTask):
    """Build the tokenizer (GPT-2's, or a byte-level BPE learnt on the training prompts) and the model."""

    kind = "clipcap"

    def build(self, data: PairData, train_idx: np.ndarray, out: Path, cfg: TrainConfig) -> cc.ClipCapModel:
        a = self.arch
        if a.get("gpt2"):
            self.tokenizer = cc.load_tokenizer(a["gpt2"])
        else:
            self.tokenizer = cc.train_tokenizer([data.prompts[i] for i in train_idx], a["vocab_size"])
        gpt = cc.build_gpt2(a, self.tokenizer)
        cc.save_language_side(out, self.tokenizer, gpt)
        eos = self.tokenizer.eos_token
        enc = self.tokenizer(
            [p + eos for p in data.prompts], max_length=a["max_tokens"], truncation=True, padding="max_length",
            return_tensors="pt",
        )
        self.tokens, self.mask = enc["input_ids"], enc["attention_mask"]
        model = cc.ClipCapModel(data.features.shape[1], gpt, **cc.mapping_settings(a))
        model.norm.fit(data.features[train_idx])
        return model

    def dataset(self, data: PairData, idx: np.ndarray, cfg: TrainConfig, train: bool):
        i = torch.from_numpy(idx)
        return torch.utils.data.TensorDataset(torch.from_numpy(data.features[idx]), self.tokens[i], self.mask[i])

    def collate(self, items: list):
        feats, tokens, mask = super().collate(items)
        width = int(mask.sum(1).max())
        return feats, tokens[:, :width], mask[:, :width]

    def loss(self, model: cc.ClipCapModel, batch) -> torch.Tensor:
        return model(*batch)

    def predict(self, model: cc.ClipCapModel, data: PairData, idx: np.ndarray, cfg: TrainConfig) -> np.ndarray:
        device = next(model.parameters()).device
        texts: list[str] = []
        for start in range(0, len(idx), 64):
            feats = torch.from_numpy(data.features[idx[start : start + 64]]).to(device)
            texts += cc.generate(model, self.tokenizer, feats, "greedy", max_new_tokens=self.arch["max_tokens"])
        return encode(texts)
