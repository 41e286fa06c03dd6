"""The ONNX export cache: a killed export's temp file (tens of MB for MiniLM) is removed by the next
run, and new weights of the same size in the same folder get a new export."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from promptblend.cache import cache_dir
from promptblend.text import scoring_model_path
from promptblend.text.onnx import _export_key, load_onnx_encoder

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

KILLED_EXPORT = """
import os, sys
from pathlib import Path
from promptblend import atomic
with atomic.atomic_path(Path(sys.argv[1]) / "model.onnx", ".onnx") as tmp:  # as export_onnx writes it
    tmp.write_bytes(b"half an onnx graph" * 1000)
    os.kill(os.getpid(), 9)
"""


def _tiny_sentence_model(root: Path) -> Path:
    """A 1-layer random BERT with MiniLM's tokenizer and mean pooling, saved as sentence-transformers."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel

    bert = root / "bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(bert)
    for name in TOKENIZER_FILES:
        shutil.copy(scoring_model_path() / name, bert / name)
    st = SentenceTransformer(modules=[Transformer(str(bert), max_seq_length=32), Pooling(32, pooling_mode="mean")],
                             device="cpu")
    st.save(str(root / "st"))
    return root / "st"


def test_a_killed_exports_temp_file_is_swept_on_the_next_run(tmp_path):
    model = str(_tiny_sentence_model(tmp_path))
    folder = cache_dir() / "onnx" / _export_key(model)
    folder.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(folder)], cwd=REPO, capture_output=True, check=False)
    assert r.returncode == -signal.SIGKILL
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name], "the killed writer left its temp file"
    encoder = load_onnx_encoder(model)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.onnx", "tokenizer.json"]
    out = encoder.encode(["a red castle", "a misty forest at dawn"])
    assert out.shape == (2, 32) and np.isfinite(out).all()


def test_new_weights_of_the_same_size_get_a_new_export_key(tmp_path):
    model = _tiny_sentence_model(tmp_path)
    before = _export_key(str(model))
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(b ^ 1 for b in data[-64:])  # other values in the last tensor, same size
    weights.write_bytes(bytes(data))
    assert _export_key(str(model)) != before
