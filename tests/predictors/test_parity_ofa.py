"""Parity with the reference: modelscope's OFA (its own ``modeling_ofa.py`` / ``resnet.py`` /
``configuration_ofa.py``, :mod:`predictors.ofa.reference`) builds a tiny random OFA, saved in OFA-Sys'
checkpoint layout; promptblend's ``ofa`` loads that folder and gives the same encoder outputs (to 1e-5)
and the same beam-search captions on real images. The same folder captions through the CLI, and with one
parameter missing is refused in one ``error:`` line.

modelscope comes with the ``dev`` extra; without it these tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from predictors.run import main
from promptblend.imagesets import open_image_set
from promptblend.runs import is_run, load_run

QUERY = " what does the image describe?"
SETTINGS = {"num_beams": 5, "no_repeat_ngram_size": 3, "max_new_tokens": 12}
RESOLUTION = 64


def _randomise(model, words: int) -> None:
    """Every weight and BatchNorm statistic random (none left at a neutral init); gains as in the tiny twin
    so captions follow the image and are mostly words."""
    from predictors.ofa.tiny import CROSS_GAIN, EXTRA_GAIN, SELF_GAIN

    gains = {"cross_attn": CROSS_GAIN, "self_attn": SELF_GAIN}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if p.ndim >= 2 or "rel_pos_table" in name:
                p.normal_(0.0, 0.2)
            else:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
        model.encoder.embed_tokens.weight[words:] *= EXTRA_GAIN
        for name, p in model.decoder.layers.named_parameters():
            if p.ndim == 2 and name.split(".")[1] in gains:
                p.mul_(gains[name.split(".")[1]])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(modelscope's tiny OFA, its checkpoint folder): config.json, pytorch_model.bin, vocab.json, merges.txt."""
    pytest.importorskip("modelscope", reason="modelscope (the reference OFA) comes with the dev extra")
    from predictors.ofa.config import EXTRA_TOKENS
    from predictors.ofa.reference import reference_classes, save_reference_checkpoint
    from predictors.ofa.tiny import write_tokenizer

    tokenizer = tmp_path_factory.mktemp("ofa-tokenizer")
    words = write_tokenizer(tokenizer)
    config_class, model_class = reference_classes()
    config = config_class(
        vocab_size=words + len(EXTRA_TOKENS), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, resnet_type="resnet18",
    )
    model = model_class(config).eval()
    _randomise(model, words)
    folder = save_reference_checkpoint(model, tmp_path_factory.mktemp("ofa") / "ofa-ref", tokenizer,
                                       patch_image_size=RESOLUTION)
    return model, folder


@pytest.fixture(scope="module")
def images(drawbench, kaggle_sample):
    """14 DrawBench JPEGs and 2 Kaggle PNGs, decoded."""
    sets = [(open_image_set(drawbench / "images"), range(0, 400, 29)),
            (open_image_set(kaggle_sample / "images"), (0, 1))]
    return [s.load(i) for s, rows in sets for i in rows]


def _predictor(folder):
    from predictors.registry import create_predictor

    predictor = create_predictor("ofa", model=str(folder), **SETTINGS)
    predictor.device = "cpu"
    predictor.ensure_setup()
    return predictor


def _reference_encoder(model, input_ids, pixels):
    masks = torch.ones(len(pixels), dtype=torch.bool)
    return model.encoder(input_ids=input_ids, patch_images=pixels, patch_masks=masks)


def test_same_encoder_outputs_and_captions_as_modelscope(reference, images):
    from predictors.ofa.load import generation_config

    model, folder = reference
    predictor = _predictor(folder)
    bundle = predictor.bundle
    assert predictor.resolution == RESOLUTION and isinstance(bundle.model, torch.nn.Module)
    pixels = predictor.collate([predictor.preprocess(im) for im in images])
    query = bundle.query_ids(QUERY, len(images))
    # the seed's query in every row, and two queries of different lengths (padding masked)
    mixed = bundle.tokenizer(["a photo", QUERY] * (len(images) // 2), return_tensors="pt", padding=True)["input_ids"]
    assert mixed.eq(bundle.model.config.pad_token_id).any()
    with torch.inference_mode():
        for ids in (query, mixed):
            ours, theirs = bundle.model.encoder(ids, pixels), _reference_encoder(model, ids, pixels)
            assert torch.equal(ours.padding_mask, theirs.padding_mask)
            kept = ~theirs.padding_mask
            assert torch.allclose(ours.last_hidden_state[kept], theirs.last_hidden_state[kept], atol=1e-5, rtol=0)
            assert torch.allclose(ours.position_embedding, theirs.position_embedding, atol=1e-5, rtol=0)

        tokens = bundle.generate(pixels, QUERY, **SETTINGS)
        settings = generation_config(bundle.model.config, **SETTINGS)
        expected = model.generate(encoder_outputs=_reference_encoder(model, query, pixels), generation_config=settings)
    assert torch.equal(tokens, expected)
    captions = predictor.caption(pixels)
    assert captions == bundle.decode(expected)
    assert len(set(captions)) > len(images) // 2, "captions barely depend on the image: the comparison is weak"


def test_reference_folder_captions_through_the_cli(reference, images, drawbench, copy_images, tmp_path, capsys):
    _, folder = reference
    src = copy_images(drawbench / "images", 4)
    out = tmp_path / "runs"
    argv = ["ofa", "--images", str(src), "--out", str(out), "--config", f"model={folder}",
            *(f"{k}={v}" for k, v in SETTINGS.items()), "--quiet", "--workers", "0"]
    assert main(argv) == 0
    (run,) = [load_run(p) for p in out.iterdir() if is_run(p)]
    predictor = _predictor(folder)
    s = open_image_set(src)
    expected = predictor.caption(predictor.collate([predictor.preprocess(s.load(i)) for i in range(len(s))]))
    assert run.ids == s.ids and run.prompts == expected
    assert run.embeddings.shape == (4, 384)

    # one parameter missing: one error line naming it, no run
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = torch.load(broken / "pytorch_model.bin", weights_only=True)
    del state["decoder.layers.1.fc2.weight"]
    torch.save(state, broken / "pytorch_model.bin")
    capsys.readouterr()
    argv[argv.index(f"model={folder}")] = f"model={broken}"
    argv[argv.index(str(out))] = str(tmp_path / "none")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    assert err[-1].startswith("error: ") and "decoder.layers.1.fc2.weight" in err[-1] and "missing" in err[-1]
    assert not any(is_run(p) for p in (tmp_path / "none").glob("*"))


def test_shape_mismatch_and_unused_keys(reference, tmp_path, caplog):
    """config.json disagreeing with the weights is refused naming the key; extra keys only warn."""
    from predictors.ofa.load import build_model
    from predictors.training.checkpoint import CheckpointError

    _, folder = reference
    wide = tmp_path / "wide"
    shutil.copytree(folder, wide)
    config = json.loads((wide / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "encoder_ffn_dim": 96}))
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.fc1\.weight \(64, 32\) \(model \(96, 32\)\)"):
        build_model(wide)

    extra = tmp_path / "extra"
    shutil.copytree(folder, extra)
    state = torch.load(extra / "pytorch_model.bin", weights_only=True)
    state["encoder.some_adapter.weight"] = torch.zeros(3)
    torch.save(state, extra / "pytorch_model.bin")
    with caplog.at_level("WARNING"):
        build_model(extra)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "encoder.some_adapter.weight" in warned[0] and "image_rp_bucket" not in warned[0]


@pytest.mark.parametrize("model, message", [
    ("OFA-Sys/ofa-large-caption", "cannot load OFA checkpoint 'OFA-Sys/ofa-large-caption' (offline or missing)"),
    ("/nonexistent/ofa", "OFA checkpoint folder does not exist: /nonexistent/ofa"),
])
def test_unresolvable_model_is_a_named_error(model, message, drawbench, copy_images, tmp_path, capsys):
    """A hub id offline (no snapshot cached) or a missing folder: one error line before any image is read."""
    src = copy_images(drawbench / "images", 1)
    assert main(["ofa", "--images", str(src), "--out", str(tmp_path / "runs"), "--config", f"model={model}",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {message}")
