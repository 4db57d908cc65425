"""The engine's own decode step for Llama language models: one token a row, in fewer kernels than transformers'.

Only the decode step is written out; prefill, and models this does not cover, run through transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel

from generator.quantize import fused_with, is_quantized
from generator.slots import SlotCache


def fused_weight(*linears: torch.nn.Linear) -> torch.Tensor | None:
    """The weights of bias-free `linears` stacked into one [sum of outputs, inputs] tensor, without a copy.

    The first call moves them into one tensor in place: each module's weight becomes a view of its rows,
    so the model holds the same bytes, its own forward still works, and a decode step runs one GEMM
    where it ran several (on a GPU at a few dozen rows, a larger GEMM streams its weights faster).
    Later calls find that layout and return a view over it. On a GPU the old weights' memory goes back
    to the driver at once: kept in torch's cache, a 7B model's 8 GB of them would sit beside the copy.
    Quantized weights were stacked when they were quantized, or cannot be (None): stacking them here
    would be a second copy.
    """
    weights = [linear.weight for linear in linears]
    if any(is_quantized(weight) for weight in weights):
        return fused_with(linears)
    first, rows = weights[0], sum(w.shape[0] for w in weights)
    storage, offset, laid_out = first.untyped_storage().data_ptr(), first.storage_offset(), True
    for weight in weights:
        laid_out &= (weight.is_contiguous() and weight.untyped_storage().data_ptr() == storage
                     and weight.storage_offset() == offset)
        offset += weight.numel()
    if laid_out:
        return first.detach().as_strided((rows, first.shape[1]), (first.shape[1], 1))
    with torch.inference_mode(first.is_inference()), torch.no_grad():  # a tensor of the parameters' kind
        fused = torch.cat([weight.detach() for weight in weights])
        for linear, part in zip(linears, fused.split([w.shape[0] for w in weights])):
            linear.weight.data = part
    if fused.is_cuda:
        torch.cuda.empty_cache()
    return fused


def _stacked(*linears: torch.nn.Linear) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The linears' weights as one stacked tensor, or each its own where they cannot be stacked (quantized)."""
    fused = fused_weight(*linears)
    return fused if fused is not None else tuple(linear.weight for linear in linears)


def _project(x: torch.Tensor, weight: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """x [rows, in] through stacked weights: one GEMM, or one per weight, concatenated.  # [rows, sum of outs]"""
    if isinstance(weight, torch.Tensor):
        return F.linear(x, weight)
    return torch.cat([F.linear(x, w) for w in weight], dim=-1)


def _add_projected(hidden: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> None:
    """hidden += x @ weight.T, in place: inside the GEMM (`addmm_`) for a plain weight; a quantized one has
    only its own linear kernel."""
    if is_quantized(weight):
        hidden.add_(F.linear(x, weight))
    else:
        hidden.addmm_(x, weight.t())


class LlamaStep:
    """One token per row through a Llama language model, written out over the model's own modules.

    The arithmetic of transformers' LlamaModel forward in fewer kernels (a step's small kernels cost more
    than their arithmetic): Q/K/V and gate/up are one GEMM each (`fused_weight`; int4 weights, whose
    layouts cannot be stacked, stay one GEMM a projection); the rotary embedding is one batched matrix
    product per layer, each row's queries and keys times that row's rotation (computed once a step); the
    residual sums happen inside the output GEMMs (`addmm_`; after them for quantized weights). On a CPU,
    attention is two batched GEMMs and a softmax rather than SDPA's kernel (`_attention`).
    `unsupported(lm)` names what it does not cover; the engine then decodes through transformers.
    """

    def __init__(self, lm: torch.nn.Module) -> None:
        self.lm = lm
        attn = lm.layers[0].self_attn
        self.heads, self.head_dim, self.scaling = lm.config.num_attention_heads, attn.head_dim, attn.scaling
        self.weights = [(_stacked(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj),
                         _stacked(layer.mlp.gate_proj, layer.mlp.up_proj)) for layer in lm.layers]
        # On a CPU, attention over one query a row runs faster as two batched GEMMs than in SDPA's kernel.
        self._sdpa = lm.device.type != "cpu"
        # x @ (diag(cos) + swap * sin) is x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1).
        half = torch.arange(self.head_dim // 2, device=lm.device)
        self._swap = torch.zeros(self.head_dim, self.head_dim, dtype=lm.dtype, device=lm.device)
        self._swap[half + self.head_dim // 2, half] = -1
        self._swap[half, half + self.head_dim // 2] = 1

    @staticmethod
    def unsupported(lm: torch.nn.Module) -> str | None:
        """Why this language model must decode through transformers' forward, or None."""
        config = lm.config
        if type(lm) is not LlamaModel or any(type(layer) is not LlamaDecoderLayer for layer in lm.layers):
            return f"a {type(lm).__name__} language model"
        if config.num_key_value_heads != config.num_attention_heads:
            return "grouped-query attention"
        if config.attention_bias or config.mlp_bias or getattr(config, "pretraining_tp", 1) != 1:
            return "biased or split projections"
        return None

    def __call__(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: SlotCache
                 ) -> torch.Tensor:
        """Final hidden states [rows, H] for embeds [rows, 1, H], position_ids [rows, 1] and an additive mask."""
        rows, heads, dim = embeds.shape[0], self.heads, self.head_dim
        cos, sin = self.lm.rotary_emb(embeds, position_ids=position_ids)  # [rows, 1, dim]
        rotation = torch.diag_embed(cos[:, 0]) + self._swap * sin  # [rows, dim, dim]
        if not self._sdpa:  # the mask of every (row, head) pair the batched GEMMs add to their scores
            mask = mask.expand(rows, heads, 1, mask.shape[-1]).reshape(rows * heads, 1, mask.shape[-1])
        hidden = embeds[:, 0].clone()  # the residual stream, summed into in place
        for index, (layer, (qkv_weight, gate_up_weight)) in enumerate(zip(self.lm.layers, self.weights)):
            attn, mlp = layer.self_attn, layer.mlp
            qkv = _project(layer.input_layernorm(hidden), qkv_weight).view(rows, 3 * heads, dim)
            qk = torch.bmm(qkv[:, : 2 * heads], rotation)  # [rows, 2 heads, dim], rotated
            keys, values = cache.update(qk[:, heads:, None], qkv[:, 2 * heads :, None], index)
            _add_projected(hidden, self._attention(qk[:, :heads], keys, values, mask), attn.o_proj.weight)
            gate, up = _project(layer.post_attention_layernorm(hidden), gate_up_weight).chunk(2, dim=-1)
            _add_projected(hidden, mlp.act_fn(gate) * up, mlp.down_proj.weight)
        return self.lm.norm(hidden)

    def _attention(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
        """Queries [rows, heads, dim] over keys and values [rows, heads, kv, dim] -> [rows, heads * dim]."""
        rows, heads, dim = queries.shape
        if self._sdpa:
            out = F.scaled_dot_product_attention(queries[:, :, None], keys, values, attn_mask=mask, scale=self.scaling)
            return out.reshape(rows, heads * dim)
        kv = keys.shape[2]  # (rows, heads) merge into one batch dimension of the cache's views: no copy
        scores = torch.baddbmm(mask, queries.reshape(rows * heads, 1, dim),
                               keys.reshape(rows * heads, kv, dim).transpose(1, 2), alpha=self.scaling)
        out = torch.bmm(torch.softmax(scores, dim=-1), values.reshape(rows * heads, kv, dim))
        return out.view(rows, heads * dim)
