"""Weight-only quantization of the language model's linear layers through torchao, and what it costs in bytes.

Only the decoder layers' projections (attention and MLP) are quantized: they are most of a Janus model's
weights and what every decode step reads. The embeddings, the generation head and aligner, the vision
encoder and the VQ model stay in the model's dtype.

- int8: torchao's `Int8WeightOnlyConfig`, one scale a row, on any device. Q/K/V and gate/up are quantized
  as one stacked tensor whose row slices (views, no copy) become the modules' weights, so the engine's
  own decode step still runs one GEMM for each (`fused_with`).
- int4: torchao's tinygemm layout, 4 bits and a bf16 scale and zero point a group of 128 inputs: on CUDA
  `Int4WeightOnlyConfig` (tile-packed, bf16 only, compute capability 8.0 or newer), on a CPU the prototype
  `PrototypeInt4WeightOnlyConfig` (its own packing). Neither layout's row slices can serve as a module's
  weight, so the projections stay separate GEMMs.

torchao is imported only when a mode other than "none" is used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from generator.protocol import QUANTIZE_MODES as MODES

INT4_GROUPS = (128, 64, 32)  # the largest that divides a layer's inputs; a CPU layer no group divides stays as is
INT4_CUDA_IN_MULTIPLE, INT4_CUDA_OUT_MULTIPLE = 1024, 8  # tinygemm pads a weight to these


class QuantizeError(Exception):
    """A mode this device cannot run; the message is one sentence saying which mode can."""


def unsupported(mode: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `mode` cannot run on `device` in `dtype`, as a sentence naming what can, or None."""
    if mode not in MODES:
        return f"Unknown --quantize {mode!r}; use one of: {', '.join(MODES)}."
    if mode == "none":
        return None
    if device.type not in ("cpu", "cuda"):
        return f"--quantize {mode} runs on cpu and cuda only; on {device.type} use --quantize none."
    if mode == "int4" and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return (f"--quantize int4 needs a GPU of compute capability 8.0 or newer (this one is {major}.{minor}); "
                    f"use --quantize int8 here.")
        if dtype != torch.bfloat16:
            return (f"--quantize int4 runs in bf16 on a GPU, not {str(dtype).removeprefix('torch.')}; "
                    f"use --dtype bf16, or --quantize int8 in this dtype.")
    return None


def is_quantized(tensor: torch.Tensor) -> bool:
    """Whether a weight is one of torchao's quantized tensors rather than a plain one."""
    return type(tensor) not in (torch.Tensor, torch.nn.Parameter)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds: for a quantized one, its inner tensors' (data, scales, zero points)."""
    if not is_quantized(tensor):
        return tensor.numel() * tensor.element_size()
    names, _ = tensor.__tensor_flatten__()  # type: ignore[attr-defined]
    return sum(tensor_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)


def int4_group(in_features: int, device_type: str) -> int | None:
    """The int4 group size of a layer with `in_features` inputs, or None when it stays unquantized.

    tinygemm on CUDA pads the inputs to a multiple of 1024, which every group divides; the CPU layout pads
    nothing (Janus' 2048, 4096, 5632 and 11008 inputs all take 128; the small test presets need less).
    """
    if device_type == "cuda":
        return INT4_GROUPS[0]
    return next((g for g in INT4_GROUPS if in_features % g == 0), None)


def quantized_bytes(out_features: int, in_features: int, mode: str, device_type: str, dtype: torch.dtype) -> int:
    """Bytes torchao's layout of one [out, in] weight takes (the weight's own bytes where it stays unquantized)."""
    plain = out_features * in_features * dtype.itemsize
    if mode == "int8":  # int8 data, a float32 scale and an int8 zero point a row
        return out_features * (in_features + 4 + 1)
    if mode == "int4":
        group = int4_group(in_features, device_type)
        if group is None:
            return plain
        if device_type == "cuda":
            in_features = -(-in_features // INT4_CUDA_IN_MULTIPLE) * INT4_CUDA_IN_MULTIPLE
            out_features = -(-out_features // INT4_CUDA_OUT_MULTIPLE) * INT4_CUDA_OUT_MULTIPLE
            scale_dtype = torch.bfloat16
        else:
            scale_dtype = dtype
        # two 4-bit values a byte; a scale and a zero point, in the scale dtype, per group of inputs a row
        return out_features * in_features // 2 + (in_features // group) * out_features * 2 * scale_dtype.itemsize
    return plain


def layer_linears(layer: torch.nn.Module) -> list[torch.nn.Linear]:
    """A decoder layer's linear projections, the ones quantization covers."""
    return [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]


def _fusable_groups(layer: torch.nn.Module) -> list[tuple[torch.nn.Linear, ...]]:
    """Q/K/V and gate/up of a Llama layer without biases: the stacks the own decode step runs as one GEMM."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    groups = []
    if attn is not None and all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj")):
        groups.append((attn.q_proj, attn.k_proj, attn.v_proj))
    if mlp is not None and all(hasattr(mlp, n) for n in ("gate_proj", "up_proj")):
        groups.append((mlp.gate_proj, mlp.up_proj))
    return [g for g in groups if all(linear.bias is None for linear in g)]


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """torchao's import logs warnings about CUDA extensions a CPU build cannot load and a deprecated pytree call."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _config(mode: str, device_type: str, group: int | None) -> object:
    try:
        with _quiet_import():
            import torchao.quantization as tq
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    except ImportError as err:
        raise QuantizeError(f"--quantize {mode} needs torchao ({err}); install the versions in requirements.txt."
                            ) from None
    # set_inductor_config=False: torchao would otherwise change inductor's process-wide settings.
    if mode == "int8":
        return tq.Int8WeightOnlyConfig(set_inductor_config=False)
    if device_type == "cuda":
        return tq.Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d",
                                       set_inductor_config=False)
    return PrototypeInt4WeightOnlyConfig(group_size=group, set_inductor_config=False)


def _quantized(weight: torch.Tensor, mode: str) -> torch.Tensor | None:
    """torchao's quantized form of a plain [out, in] weight (on its device), or None where it stays as is."""
    group = int4_group(weight.shape[1], weight.device.type) if mode == "int4" else None
    if mode == "int4" and group is None:
        return None
    config = _config(mode, weight.device.type, group)  # imports torchao
    from torchao.quantization import quantize_

    holder = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    holder.weight = torch.nn.Parameter(weight, requires_grad=False)
    quantize_(holder, config)
    return holder.weight


def quantize_layer(layer: torch.nn.Module, mode: str) -> None:
    """Quantize a decoder layer's linear projections in place, on the device they are on."""
    if mode == "none":
        return
    fused = _fusable_groups(layer) if mode == "int8" else []
    alone = [linear for linear in layer_linears(layer) if not any(linear in group for group in fused)]
    with torch.no_grad():
        for group in fused:
            stacked = _quantized(torch.cat([linear.weight.detach() for linear in group]), mode)  # [sum of outs, in]
            assert stacked is not None
            start = 0
            for linear in group:
                rows = linear.out_features
                linear.weight = torch.nn.Parameter(stacked[start : start + rows], requires_grad=False)  # a view
                # What llama_step.fused_weight hands the decode step; kept out of the module's parameters,
                # which would count (and move) the rows twice.
                linear.__dict__["fused_with"] = stacked
                start += rows
        for linear in alone:
            quantized = _quantized(linear.weight.detach(), mode)
            if quantized is not None:
                linear.weight = torch.nn.Parameter(quantized, requires_grad=False)


def fused_with(linears: tuple[torch.nn.Linear, ...]) -> torch.Tensor | None:
    """The quantized tensor whose consecutive row slices these linears' weights are, or None."""
    stacked = getattr(linears[0], "fused_with", None)
    if stacked is None or any(getattr(linear, "fused_with", None) is not stacked for linear in linears):
        return None
    if stacked.shape[0] != sum(linear.out_features for linear in linears):
        return None
    return stacked


@dataclass(frozen=True)
class QuantizedShare:
    """What quantization did to the language model's linear layers: bytes now and in bf16, layers covered."""

    quantized_bytes: int  # of the layers quantized
    bf16_bytes: int  # the same layers in bf16
    layers: int  # linear layers quantized
    total_layers: int  # linear layers in the decoder

    @property
    def ratio(self) -> float:
        return self.quantized_bytes / self.bf16_bytes if self.bf16_bytes else 1.0


def quantized_share(lm: torch.nn.Module) -> QuantizedShare:
    """Measured: the bytes of the language model's quantized linear layers, and the same layers in bf16."""
    layers = [linear for layer in lm.layers for linear in layer_linears(layer)]
    quantized = [linear for linear in layers if is_quantized(linear.weight)]
    return QuantizedShare(
        quantized_bytes=sum(tensor_bytes(linear.weight) for linear in quantized),
        bf16_bytes=sum(linear.in_features * linear.out_features * 2 for linear in quantized),
        layers=len(quantized),
        total_layers=len(layers),
    )


def quantize_model(model: torch.nn.Module, mode: str, device: torch.device) -> None:
    """Move a Janus model (on the CPU) to `device`, quantizing its language model's layers one at a time there.

    One layer at a time: the device holds the quantized layers so far and one layer in the model's dtype,
    never the whole unquantized model (a 7B model is 14 GB in bf16, 4 GB as int4). Nothing moves twice:
    torch refuses to move a quantized parameter another module still refers to.
    """
    lm = model.model.language_model
    layers = lm.layers
    lm.layers = torch.nn.ModuleList()  # everything else first, in one move
    try:
        model.to(device)
    finally:
        lm.layers = layers
    for layer in layers:
        layer.to(device)
        quantize_layer(layer, mode)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the unquantized layers' memory back to the driver: free memory sizes the batch
