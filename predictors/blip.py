"""A tiny random-initialised BLIP captioner (real architecture, offline) for tests and the demo.

Its text side uses the BERT WordPiece vocabulary of the packaged all-MiniLM-L6-v2 with BLIP's two
extra tokens (``[DEC]`` as bos, ``[ENC]``), as the real BLIP tokenizer does.
"""

from __future__ import annotations

from typing import Any

TINY_BLIP = "pb-tiny-blip"
TINY_IMAGE_SIZE = 64
CROSS_ATTENTION_GAIN = 5.0


def tiny_blip_processor() -> Any:
    """BLIP processor: 64 px image processing + MiniLM's BERT vocab with ``[DEC]``/``[ENC]``."""
    from transformers import AutoTokenizer, BlipImageProcessor, BlipProcessor

    from promptblend.text import scoring_model_path

    tokenizer = AutoTokenizer.from_pretrained(
        str(scoring_model_path()), bos_token="[DEC]", additional_special_tokens=["[ENC]"], model_max_length=512
    )
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_blip(seed: int = 0) -> tuple[Any, Any]:
    """``(BlipForConditionalGeneration, BlipProcessor)``: 2-layer, 64-wide towers, seeded weights, cross-attention
    scaled up so that captions differ between images."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    processor = tiny_blip_processor()
    tok = processor.tokenizer
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=64, encoder_hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=128, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, sep_token_id=tok.sep_token_id,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE, patch_size=16, initializer_range=0.02,
        ),
        projection_dim=64,
        image_text_hidden_size=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # at init scale the image barely moves the text: every caption would be the same
        for name, param in model.text_decoder.named_parameters():
            if "crossattention" in name and param.ndim == 2:
                param.mul_(CROSS_ATTENTION_GAIN)
    return model.eval(), processor
