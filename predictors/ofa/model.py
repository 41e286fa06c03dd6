"""OFA for captioning: ResNet image embedding + text query -> encoder -> decoder, as a transformers
``PreTrainedModel`` with ``GenerationMixin`` (batched beam search, KV cache).

Written for promptblend after OFA-Sys' model (the same computation as modelscope's ``modeling_ofa.py``),
with only what captioning needs. Parameter names are the checkpoint keys. OFA's attention differs from
BART's in four ways, all here: queries scaled by ``(head_dim * attn_scale_factor) ** -0.5``; an absolute
position bias ``(LN(p) Wq)(LN(p') Wk)^T`` computed from position embeddings apart from the tokens; a learnt
relative position bias per layer (bucketed token distances; 2-D patch offsets for the image); NormFormer's
extra norms and per-head output scales (``c_attn``). Positions are the same for every row of a batch (the
images share one size, the queries one padded length), so position biases are computed once per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import ModelOutput, Seq2SeqLMOutput

from .config import RESNET_LAYERS, OFAConfig

#: OFA's relative token buckets grow logarithmically up to this distance.
MAX_POSITIONS = 1024


def token_buckets(query_pos: torch.Tensor, key_pos: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """OFA's bucket index of each (query, key) token distance: exact within ``bucket_size // 2``, log-spaced
    beyond, shifted to start at 0."""
    rel = query_pos[:, None] - key_pos[None, :]
    mid = bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), mid - 1, rel.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((MAX_POSITIONS - 1) / mid) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel, log_pos.int() * torch.sign(rel)).long() + bucket_size - 1


def image_buckets(h: int, w: int, bucket_size: int) -> torch.Tensor:
    """Bucket index of each pair of patches of an ``h`` x ``w`` grid: their (row, column) offset."""
    rows = torch.arange(h).repeat_interleave(w)
    cols = torch.arange(w).repeat(h)
    return (rows[:, None] - rows[None, :] + bucket_size - 1) * (2 * bucket_size - 1) + (
        cols[:, None] - cols[None, :] + bucket_size - 1
    )


class ResNet(nn.Module):
    """ResNet's stem and first three stages of Bottleneck blocks (torchvision's), 1024 channels at 1/16 scale."""

    def __init__(self, layers: tuple[int, int, int]) -> None:
        from torchvision.models.resnet import Bottleneck

        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256), layers)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            stage = [Bottleneck(inplanes, planes, stride, down)]
            stage += [Bottleneck(planes * 4, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            inplanes = planes * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1024, H/16, W/16)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class Attention(nn.Module):
    """Multi-head attention with OFA's query scaling, an additive bias and NormFormer head scales."""

    def __init__(self, dim: int, heads: int, scale_factor: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.q_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.c_attn = nn.Parameter(torch.ones(heads))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, head_dim)."""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attend from ``x`` (B, T, D) to split ``keys``/``values`` with ``bias`` added to the scores."""
        out = F.scaled_dot_product_attention(self.split(self.q_proj(x)), keys, values, attn_mask=bias,
                                             scale=self.scaling)
        out = out * self.c_attn.view(1, -1, 1, 1)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


def _norm(dim: int, used: bool) -> nn.LayerNorm | None:
    return nn.LayerNorm(dim) if used else None


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward block with NormFormer's extra norms."""

    def __init__(self, config: OFAConfig) -> None:
        super().__init__()
        dim = config.d_model
        self.self_attn = Attention(dim, config.encoder_attention_heads, config.attn_scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn_mid_layer_norm = _norm(dim, config.normformer)
        self.fc1, self.fc2 = nn.Linear(dim, config.encoder_ffn_dim), nn.Linear(config.encoder_ffn_dim, dim)
        self.ffn_layer_norm = _norm(config.encoder_ffn_dim, config.normformer)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation = ACT2FN[config.activation_function]

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-norm feed-forward branch added to ``x``."""
        h = self.activation(self.fc1(self.final_layer_norm(x)))
        if self.ffn_layer_norm is not None:
            h = self.ffn_layer_norm(h)
        return x + self.fc2(h)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One layer over (B, S, D) with the attention ``bias`` (B or 1, heads, S, S)."""
        h = self.self_attn_layer_norm(x)
        h = self.self_attn(h, self.self_attn.split(self.self_attn.k_proj(h)),
                           self.self_attn.split(self.self_attn.v_proj(h)), bias)
        if self.self_attn_mid_layer_norm is not None:
            h = self.self_attn_mid_layer_norm(h)
        return self.feed_forward(x + h)


class DecoderLayer(EncoderLayer):
    """Causal self-attention (cached), cross-attention to the encoder (cached once) and feed-forward."""

    def __init__(self, config: OFAConfig) -> None:
        super().__init__(config)
        dim = config.d_model
        self.self_attn = Attention(dim, config.decoder_attention_heads, config.attn_scale_factor)
        self.cross_attn = Attention(dim, config.decoder_attention_heads, config.attn_scale_factor)
        self.cross_attn_layer_norm = nn.LayerNorm(dim)
        self.cross_attn_mid_layer_norm = _norm(dim, config.normformer)
        self.fc1, self.fc2 = nn.Linear(dim, config.decoder_ffn_dim), nn.Linear(config.decoder_ffn_dim, dim)
        self.ffn_layer_norm = _norm(config.decoder_ffn_dim, config.normformer)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_bias: torch.Tensor, cross_bias: torch.Tensor,
                cache: EncoderDecoderCache | None, idx: int) -> torch.Tensor:
        """One layer over the new tokens ``x`` (B, T, D); ``cache`` holds earlier keys/values."""
        attn = self.self_attn
        h = self.self_attn_layer_norm(x)
        keys, values = attn.split(attn.k_proj(h)), attn.split(attn.v_proj(h))
        if cache is not None:
            keys, values = cache.self_attention_cache.update(keys, values, idx)
        h = attn(h, keys, values, self_bias)
        if self.self_attn_mid_layer_norm is not None:
            h = self.self_attn_mid_layer_norm(h)
        x = x + h

        attn = self.cross_attn
        if cache is not None and cache.is_updated.get(idx):
            keys, values = cache.cross_attention_cache.layers[idx].keys, cache.cross_attention_cache.layers[idx].values
        else:
            keys, values = attn.split(attn.k_proj(memory)), attn.split(attn.v_proj(memory))
            if cache is not None:
                keys, values = cache.cross_attention_cache.update(keys, values, idx)
                cache.is_updated[idx] = True
        h = attn(self.cross_attn_layer_norm(x), keys, values, cross_bias)
        if self.cross_attn_mid_layer_norm is not None:
            h = self.cross_attn_mid_layer_norm(h)
        return self.feed_forward(x + h)


def _rel_tables(n: int, size: int, heads: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Embedding(size, heads) for _ in range(n)])


def _position_bias(q_linear: nn.Linear, k_linear: nn.Linear, q_pos: torch.Tensor, k_pos: torch.Tensor,
                   heads: int, scaling: float) -> torch.Tensor:
    """OFA's absolute position bias (heads, Tq, Tk) from normalised position embeddings (Tq, D), (Tk, D)."""
    q = q_linear(q_pos).view(len(q_pos), heads, -1).transpose(0, 1) * scaling
    k = k_linear(k_pos).view(len(k_pos), heads, -1).transpose(0, 1)
    return q @ k.transpose(1, 2)


@dataclass
class OFAEncoderOutput(ModelOutput):
    """The encoder's states, its key padding mask and the normalised positions the decoder's cross bias reads."""

    last_hidden_state: torch.Tensor | None = None
    padding_mask: torch.Tensor | None = None
    position_embedding: torch.Tensor | None = None


def _mask_bias(padding: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) bool padding -> (B, 1, 1, S) additive mask."""
    return torch.zeros(padding.shape, dtype=dtype, device=padding.device).masked_fill(
        padding, torch.finfo(dtype).min)[:, None, None, :]


class OFAEncoder(nn.Module):
    """Image patches (ResNet) followed by query tokens, through pre-norm layers with OFA's position biases."""

    main_input_name = "input_ids"

    def __init__(self, config: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        dim, heads = config.d_model, config.encoder_attention_heads
        self.config, self.heads = config, heads
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_tokens = embed_tokens
        self.type_embedding = nn.Embedding(2, dim)
        self.embed_images = ResNet(RESNET_LAYERS[config.resnet_type])
        self.image_proj = nn.Linear(1024, dim)
        self.layernorm_embedding = _norm(dim, config.layernorm_embedding)
        self.patch_layernorm_embedding = _norm(dim, config.patch_layernorm_embedding)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        self.embed_image_positions = nn.Embedding(config.image_bucket_size**2 + 1, dim)
        self.pos_ln, self.image_pos_ln = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * config.attn_scale_factor) ** -0.5
        self.pos_q_linear, self.pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.encoder_layers)])
        self.layer_norm = nn.LayerNorm(dim)
        tables = 1 if config.share_attn_bias else config.encoder_layers
        self.token_rel_pos_table_list = _rel_tables(tables, 2 * config.token_bucket_size - 1, heads)
        self.image_rel_pos_table_list = _rel_tables(tables, (2 * config.image_bucket_size - 1) ** 2 + 3, heads)

    def embed(self, input_ids: torch.Tensor, patch_images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Patch embeddings then token embeddings (B, h*w + L, D), and the patch grid ``h``, ``w``."""
        patches = self.embed_images(patch_images)
        h, w = patches.shape[-2:]
        image = self.embed_scale * self.image_proj(patches.flatten(2).transpose(1, 2)) + self.type_embedding.weight[1]
        if self.patch_layernorm_embedding is not None:
            image = self.patch_layernorm_embedding(image)
        text = self.embed_scale * self.embed_tokens(input_ids) + self.type_embedding.weight[0]
        if self.layernorm_embedding is not None:
            text = self.layernorm_embedding(text)
        return torch.cat([image, text], dim=1), h, w

    def positions(self, h: int, w: int, length: int, device: torch.device) -> torch.Tensor:
        """Normalised position embeddings (h*w + length, D): patch grid cells, then token positions."""
        b = self.config.image_bucket_size
        cells = (torch.arange(h, device=device)[:, None] * b + torch.arange(w, device=device)[None, :] + 1).view(-1)
        image = self.image_pos_ln(self.embed_image_positions(cells))
        return torch.cat([image, self.pos_ln(self.embed_positions(torch.arange(length, device=device)))])

    def forward(self, input_ids: torch.Tensor, patch_images: torch.Tensor, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool = True) -> OFAEncoderOutput:
        """Encode images (B, 3, R, R) with their query tokens (B, L); padded tokens are masked."""
        x, h, w = self.embed(input_ids, patch_images)
        n, length = h * w, input_ids.shape[1]
        text_padding = input_ids.eq(self.config.pad_token_id)
        padding = torch.cat([text_padding.new_zeros((len(x), n)), text_padding], 1)
        mask = None
        if padding.any():
            x = x * (1 - padding.unsqueeze(-1).type_as(x))
            mask = _mask_bias(padding, x.dtype)
        pos = self.positions(h, w, length, x.device)
        abs_bias = _position_bias(self.pos_q_linear, self.pos_k_linear, pos, pos, self.heads, self.pos_scaling)
        tokens = token_buckets(torch.arange(length), torch.arange(length), self.config.token_bucket_size).to(x.device)
        cells = image_buckets(h, w, self.config.image_bucket_size).to(x.device)
        for idx, layer in enumerate(self.layers):
            t = 0 if self.config.share_attn_bias else idx
            bias = abs_bias.clone()
            bias[:, n:, n:] += self.token_rel_pos_table_list[t](tokens).permute(2, 0, 1)
            bias[:, :n, :n] += self.image_rel_pos_table_list[t](cells).permute(2, 0, 1)
            bias = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask
            x = layer(x, bias.to(x.dtype))
            if x.dtype == torch.float16:
                x = x.clamp(-torch.finfo(x.dtype).max + 1000, torch.finfo(x.dtype).max - 1000)
        return OFAEncoderOutput(last_hidden_state=self.layer_norm(x), padding_mask=padding,
                                position_embedding=pos.unsqueeze(0).expand(len(x), -1, -1))


class OFADecoder(nn.Module):
    """Caption tokens through pre-norm layers attending to the encoder, with OFA's position biases."""

    def __init__(self, config: OFAConfig, embed_tokens: nn.Embedding) -> None:
        super().__init__()
        dim, heads = config.d_model, config.decoder_attention_heads
        self.config, self.heads = config, heads
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = _norm(dim, config.layernorm_embedding)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + 2, dim)
        self.pos_ln = nn.LayerNorm(dim)
        self.pos_scaling = (dim / heads * config.attn_scale_factor) ** -0.5
        self.self_pos_q_linear, self.self_pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.cross_pos_q_linear, self.cross_pos_k_linear = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.decoder_layers)])
        self.layer_norm = nn.LayerNorm(dim)
        tables = 1 if config.share_attn_bias else config.decoder_layers
        self.token_rel_pos_table_list = _rel_tables(tables, 2 * config.token_bucket_size - 1, heads)
        self.output_projection = (
            None if config.share_decoder_input_output_embed else nn.Linear(dim, config.vocab_size, bias=False)
        )

    def forward(self, input_ids: torch.Tensor, encoder: OFAEncoderOutput,
                cache: EncoderDecoderCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) of the new tokens ``input_ids`` (B, T) following the ``cache``'s earlier ones."""
        past = cache.get_seq_length() if cache is not None else 0
        total = past + input_ids.shape[1]
        device, dtype = input_ids.device, self.embed_tokens.weight.dtype
        steps = torch.arange(total, device=device)
        pos = self.pos_ln(self.embed_positions(steps))
        new = pos[past:]
        self_abs = _position_bias(self.self_pos_q_linear, self.self_pos_k_linear, new, pos, self.heads,
                                  self.pos_scaling)
        # the encoder's positions are the same in every row: one row gives the bias for all
        cross = _position_bias(self.cross_pos_q_linear, self.cross_pos_k_linear, new, encoder.position_embedding[0],
                               self.heads, self.pos_scaling).unsqueeze(0) + _mask_bias(encoder.padding_mask, dtype)
        buckets = token_buckets(steps[past:].cpu(), steps.cpu(), self.config.token_bucket_size).to(device)
        causal = torch.zeros(buckets.shape, dtype=dtype, device=device).masked_fill(
            steps[past:, None] < steps[None, :], torch.finfo(dtype).min)
        x = self.embed_scale * self.embed_tokens(input_ids)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        memory = encoder.last_hidden_state
        for idx, layer in enumerate(self.layers):
            t = 0 if self.config.share_attn_bias else idx
            self_bias = (self_abs + self.token_rel_pos_table_list[t](buckets).permute(2, 0, 1) + causal).unsqueeze(0)
            x = layer(x, memory, self_bias.to(dtype), cross.to(dtype), cache, idx)
        x = self.layer_norm(x)
        if self.output_projection is not None:
            return self.output_projection(x)
        return F.linear(x, self.embed_tokens.weight)


class OFAModel(PreTrainedModel, GenerationMixin):
    """OFA: ``generate(input_ids=query, patch_images=images, num_beams=5, no_repeat_ngram_size=3)`` captions."""

    config_class = OFAConfig
    base_model_prefix = "ofa"
    main_input_name = "input_ids"

    def __init__(self, config: OFAConfig) -> None:
        super().__init__(config)
        shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = OFAEncoder(config, shared)
        self.decoder = OFADecoder(config, shared)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """OFA's initialisation: normal(0, ``init_std``) linear and embedding weights, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def get_encoder(self) -> OFAEncoder:
        """The encoder (what ``generate`` runs once)."""
        return self.encoder

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embeddings the encoder and decoder share."""
        return self.encoder.embed_tokens

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        patch_images: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        encoder_outputs: OFAEncoderOutput | None = None,
        cache: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """Decoder logits of ``decoder_input_ids`` given the encoded images and queries (encoded here if not given)."""
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, patch_images)
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        logits = self.decoder(decoder_input_ids, encoder_outputs, cache if use_cache else None)
        return Seq2SeqLMOutput(logits=logits, cache=cache if use_cache else None,
                               encoder_last_hidden_state=encoder_outputs.last_hidden_state)
