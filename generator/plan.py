"""`janus-bot plan`: what a checkpoint needs on a GPU and how many images fit, from its config alone.

No weights are loaded: the model is built on torch's meta device (shapes, no memory) and each tensor's bytes
are worked out as the loaded model will hold them, quantized layers in torchao's layout. The image slots come
from `generator.slots.image_slots`, the rule the engine sizes its batch by at start.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from generator.cli import UsageError, command, quiet_transformers
from generator.quantize import MODES, int4_group, layer_linears, quantized_bytes
from generator.slots import image_slots, kv_bytes_per_image, margin_bytes

CARDS_GB = (8, 12, 16, 24, 48, 80)  # planned for when no GPU is here and none is given
CUDA_CONTEXT = 512 << 20  # estimate of what the process's CUDA context and cuBLAS take before any tensor
PROMPT_TOKENS = 256  # the prompt positions every slot keeps: the engine's default max_prompt_tokens
GIB = 2**30


@dataclass(frozen=True)
class WeightBytes:
    """A model's weights on the device in one mode, and the share of them quantization covers."""

    total: int  # every parameter and buffer the generator process holds on the device
    quantized: int  # the language model's linear layers the mode covers (all of them for "none"), as stored
    quantized_bf16: int  # the same layers in bf16
    layers: int  # linear layers the mode covers
    total_layers: int  # linear layers in the language model's decoder

    @property
    def ratio(self) -> float:
        return self.quantized / self.quantized_bf16 if self.quantized_bf16 else 1.0


@dataclass(frozen=True)
class Architecture:
    """What a config says about memory: the model's tensors (on the meta device) and its image grid."""

    model: torch.nn.Module
    dtype: torch.dtype
    num_image_tokens: int
    parameters: int

    def weights(self, mode: str, device_type: str = "cuda") -> WeightBytes:
        """Bytes of the weights loaded in `mode` (generator.quantize) on a device of `device_type`."""
        lm = self.model.model.language_model
        linears = [linear for layer in lm.layers for linear in layer_linears(layer)]
        plain = {id(linear.weight) for linear in linears}
        tensors = {id(t): t for t in [*self.model.parameters(), *self.model.buffers()] if id(t) not in plain}
        other = sum(t.numel() * t.element_size() for t in tensors.values())
        covered = [linear for linear in linears if mode != "int4" or int4_group(linear.in_features, device_type)]
        stored = {id(linear): quantized_bytes(linear.out_features, linear.in_features, mode, device_type, self.dtype)
                  for linear in linears}
        return WeightBytes(
            total=other + sum(stored.values()),
            quantized=sum(stored[id(linear)] for linear in covered),
            quantized_bf16=sum(2 * linear.in_features * linear.out_features for linear in covered),
            layers=len(covered),
            total_layers=len(linears),
        )

    def kv_per_image(self, prompt_tokens: int = PROMPT_TOKENS) -> int:
        """KV cache bytes of one image slot: two rows of the prompt positions and the image's tokens."""
        return kv_bytes_per_image(self.model.config.text_config, self.dtype, prompt_tokens + self.num_image_tokens)


def architecture(config: object, dtype: torch.dtype = torch.bfloat16) -> Architecture:
    """The model a config describes, on the meta device, in `dtype` the way from_pretrained builds it."""
    from transformers import JanusForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # as from_pretrained: tensors the model computes in float32 stay float32
    try:
        with torch.device("meta"):
            model = JanusForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    grid = int(model.model.vqmodel.quantize.quant_state_dims[0])
    return Architecture(model, dtype, grid * grid, sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True)
class MemoryPlan:
    """One mode on one card: the weights, the KV cache a slot takes, the margin kept, and the slots that fit."""

    mode: str
    weights: WeightBytes
    kv_per_image: int
    total: int  # the card's memory
    free: int  # left after the CUDA context and the weights
    images: int  # slots that fit (at most the engine's 64); 0: not even one

    @property
    def margin(self) -> int:
        return margin_bytes(self.total)

    @property
    def short(self) -> int:
        """Bytes missing for one image slot (0 when it fits)."""
        return max(0, self.margin + self.kv_per_image - self.free)


def plan_memory(arch: Architecture, mode: str, total: int, free: int | None = None, *, device_type: str = "cuda"
                ) -> MemoryPlan:
    """What `mode` leaves on a card of `total` bytes, of which `free` are free before loading (by default all but
    the CUDA context): the engine's own sizing applied to what is left after the weights."""
    weights = arch.weights(mode, device_type)
    free_before = total - CUDA_CONTEXT if free is None else free
    left = free_before - weights.total
    per_image = arch.kv_per_image()
    return MemoryPlan(mode, weights, per_image, total, left, image_slots(left, total, per_image))


# -- `janus-bot plan` ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id, checkpoint directory, or a preset's architecture: tiny, small, "
                                        "janus-pro-1b, janus-pro-7b (default: the built-in model)")
    parser.add_argument("--gpu-memory", type=float, nargs="+", metavar="GB",
                        help="a card's memory in GB as nvidia-smi shows it (MiB / 1024); several for several cards "
                             "(default: the GPU here, else 8 12 16 24 48 80)")
    parser.add_argument("--quantize", nargs="+", choices=MODES, metavar="MODE",
                        help=f"weight modes to plan: {', '.join(MODES)} (default: all)")


@command
def run(args: argparse.Namespace) -> int:
    if args.gpu_memory and any(not 0 < gb <= 4096 for gb in args.gpu_memory):
        raise UsageError("--gpu-memory is a card's memory in GB, more than 0 (8, 24, 80 ...).")
    quiet_transformers()
    config, what = _config(args.model)
    arch = architecture(config)
    cards = _cards(args.gpu_memory)
    print(describe(arch, what, cards))
    for mode in args.quantize or MODES:
        print()
        print(table(arch, mode, cards))
    print("\nSet [generator] max_batch_images (generator serve --max-batch-images) to at most the slots of your card "
          "and mode; the generator takes 16 unless told.")
    return 0


def _config(name: str | None) -> tuple[object, str]:
    """The config of a preset, a hub id or a directory (no weights), and what it is, in words."""
    from generator.checkpoint import CheckpointError, load_config, resolve_model
    from generator.presets import PRESETS, build_config, build_processor

    if name in PRESETS:
        spec = PRESETS[name]
        return build_config(spec, build_processor(spec).tokenizer), f"preset {name}"
    try:
        return load_config(resolve_model(name)), name or "the built-in model"
    except CheckpointError as err:
        raise UsageError(f"{err} (Or a preset: {', '.join(PRESETS)}.)") from None


def _cards(gpu_memory: list[float] | None) -> list[tuple[str, int, int | None]]:
    """(label, total bytes, free bytes now or None) of each card to plan for."""
    if gpu_memory:
        return [(f"{gb:g} GB", int(gb * GIB), None) for gb in gpu_memory]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)  # after this process's CUDA context, as the engine sees it
        name = torch.cuda.get_device_name(0)
        return [(f"{name} ({total / GIB:.0f} GB, {free / GIB:.1f} free now)", total, free)]
    return [(f"{gb} GB", gb * GIB, None) for gb in CARDS_GB]


def describe(arch: Architecture, what: str, cards: list[tuple[str, int, int | None]]) -> str:
    """The lines above the tables: the architecture, a slot's positions, and what the cards are."""
    text = arch.model.config.text_config
    lines = [
        f"janus-bot plan: {what}, from its config (no weights loaded): {arch.parameters / 1e9:.2f}B parameters, "
        f"{text.num_hidden_layers} layers, hidden {text.hidden_size}; bf16 on a GPU",
        f"an image slot is 2 KV-cache rows of {PROMPT_TOKENS + arch.num_image_tokens} positions ({PROMPT_TOKENS} "
        f"prompt + {arch.num_image_tokens} image tokens); the margin kept for activations and workspace is "
        f"the larger of 3 GiB and 10% of the card",
    ]
    if all(free is None for _, _, free in cards):
        gpu = "no GPU here" if not torch.cuda.is_available() else "cards as given"
        lines.append(f"{gpu}: each card's memory less {CUDA_CONTEXT / GIB:.1f} GiB for the CUDA context (an estimate)")
    return "\n".join(lines)


def table(arch: Architecture, mode: str, cards: list[tuple[str, int, int | None]]) -> str:
    """One mode: its weights, then a row a card: free after the weights, the margin, image slots, whether it fits."""
    plans = [(label, plan_memory(arch, mode, total, free)) for label, total, free in cards]
    weights, per_image = plans[0][1].weights, plans[0][1].kv_per_image
    share = f"{weights.quantized / GIB:.2f} GiB, {weights.ratio:.2f} of bf16"
    head = (f"--quantize {mode}: weights {weights.total / GIB:.2f} GiB (language model's linear layers {share}); "
            f"KV cache {per_image / 2**20:.0f} MiB an image slot")
    width = max(len("card"), *(len(label) for label, _ in plans))
    rows = [head, f"  {'card':<{width}}  {'free after weights':>18}  {'margin':>8}  {'image slots':>11}  fits"]
    for label, plan in plans:
        fits = "yes" if plan.images else f"no: {plan.short / GIB:.2f} GiB short of one image"
        slots = f"{plan.images}" + (" (cap)" if plan.images == 64 else "")
        rows.append(f"  {label:<{width}}  {plan.free / GIB:>14.2f} GiB  {plan.margin / GIB:>4.2f} GiB  "
                    f"{slots:>11}  {fits}")
    return "\n".join(rows)

