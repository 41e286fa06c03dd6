"""OFA's configuration: the fields of an OFA-Sys checkpoint's ``config.json`` that captioning reads.

Field names and defaults are those of OFA-Sys's transformers port (and modelscope's ``OFAConfig``), so a
checkpoint's ``config.json`` loads as is; settings this implementation does not compute (OFASys' ViT
encoders, entangled positions, post-norm layers...) are refused by :func:`unsupported`.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

#: OFA's image-code and location tokens, appended to BART's vocabulary in this order.
EXTRA_TOKENS = tuple(f"<code_{i}>" for i in range(8192)) + tuple(f"<bin_{i}>" for i in range(1000))
#: ``resnet_type`` -> blocks in each of ResNet's first three stages (all Bottleneck blocks, as in OFA).
RESNET_LAYERS = {
    "resnet18": (2, 2, 2), "resnet34": (3, 4, 6), "resnet50": (3, 4, 6), "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}
#: Image side each released OFA size was trained at, by ``d_model`` (tiny 256, medium 512, base 768,
#: large 1024, huge 1280).
RESOLUTION_BY_WIDTH = {256: 256, 512: 256, 768: 384, 1024: 480, 1280: 480}

#: Settings whose other values change the computation in ways this implementation does not follow.
_REQUIRED = {
    "use_ofasys": False, "entangle_position_embedding": False, "use_gamma_feature": False,
    "encoder_normalize_before": True, "decoder_normalize_before": True, "add_type_embedding": True,
    "use_image_feature": True,
}


class OFAConfig(PretrainedConfig):
    """OFA encoder-decoder settings (ResNet image embedding + text query -> caption)."""

    model_type = "ofa"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "decoder_attention_heads",
                     "num_hidden_layers": "decoder_layers"}

    def __init__(
        self,
        vocab_size: int = 59457,
        max_position_embeddings: int = 1024,
        d_model: int = 512,
        encoder_layers: int = 4,
        decoder_layers: int = 4,
        encoder_attention_heads: int = 8,
        decoder_attention_heads: int = 8,
        encoder_ffn_dim: int = 2048,
        decoder_ffn_dim: int = 2048,
        activation_function: str = "gelu",
        init_std: float = 0.02,
        scale_embedding: bool = False,
        normformer: bool = True,
        layernorm_embedding: bool = True,
        patch_layernorm_embedding: bool = True,
        resnet_type: str = "resnet101",
        token_bucket_size: int = 256,
        image_bucket_size: int = 42,
        attn_scale_factor: float = 2.0,
        share_attn_bias: bool = False,
        share_decoder_input_output_embed: bool = True,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        decoder_start_token_id: int = 0,
        forced_eos_token_id: int | None = 2,
        is_encoder_decoder: bool = True,
        **kwargs: Any,
    ) -> None:
        self.vocab_size, self.max_position_embeddings, self.d_model = vocab_size, max_position_embeddings, d_model
        self.encoder_layers, self.decoder_layers = encoder_layers, decoder_layers
        self.encoder_attention_heads, self.decoder_attention_heads = encoder_attention_heads, decoder_attention_heads
        self.encoder_ffn_dim, self.decoder_ffn_dim = encoder_ffn_dim, decoder_ffn_dim
        self.activation_function, self.init_std, self.scale_embedding = activation_function, init_std, scale_embedding
        self.normformer, self.layernorm_embedding = normformer, layernorm_embedding
        self.patch_layernorm_embedding, self.resnet_type = patch_layernorm_embedding, resnet_type
        self.token_bucket_size, self.image_bucket_size = token_bucket_size, image_bucket_size
        self.attn_scale_factor, self.share_attn_bias = attn_scale_factor, share_attn_bias
        self.share_decoder_input_output_embed = share_decoder_input_output_embed
        self.decoder_start_token_id, self.forced_eos_token_id = decoder_start_token_id, forced_eos_token_id
        super().__init__(
            pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            is_encoder_decoder=is_encoder_decoder, **kwargs,
        )


def unsupported(config: OFAConfig) -> list[str]:
    """``key=value`` of the settings in ``config`` that this implementation does not compute."""
    bad = [f"{k}={getattr(config, k)!r}" for k, v in _REQUIRED.items() if getattr(config, k, v) != v]
    if config.resnet_type not in RESNET_LAYERS:
        bad.append(f"resnet_type={config.resnet_type!r} (known: {', '.join(RESNET_LAYERS)})")
    return bad


def checkpoint_resolution(config: OFAConfig) -> int | None:
    """The image side the checkpoint expects: ``patch_image_size`` in its config, else the released size of
    its width; None when neither says."""
    size = getattr(config, "patch_image_size", None)
    return int(size) if size else RESOLUTION_BY_WIDTH.get(config.d_model)
