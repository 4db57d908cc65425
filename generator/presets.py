"""Random-weight Janus checkpoints of any preset architecture, built the way real ones are stored."""

from __future__ import annotations

import argparse
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessorPil,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from generator.cli import UsageError, command, quiet_transformers, writable_dir

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
SPECIAL_TOKENS = [BOS, EOS, PAD, "<|User|>", "<|Assistant|>", IMAGE, BOI, EOI]

# The conversation format of the Janus checkpoints, pictures included: "<|User|>: <image_placeholder>\n{text}\n\n
# <|Assistant|>:{reply}". A picture item becomes the placeholder and a line break, as the published template does.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set parts = [{'type': 'text', 'text': message['content']}] if message['content'] is string"
    " else message['content'] %}"
    "{% set ns = namespace(text='') %}"
    "{% for part in parts %}"
    "{% if part['type'] == 'image' %}{% set ns.text = ns.text + '<image_placeholder>\n' %}"
    "{% elif part['type'] == 'text' %}"
    "{% set ns.text = ns.text + (' ' if ns.text and not ns.text.endswith('\n') else '') + part['text'] | trim %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if message['role'] | lower == 'user' %}<|User|>: {{ ns.text | trim }}\n\n"
    "{% elif message['role'] | lower == 'assistant' %}<|Assistant|>:{% if ns.text | trim %} {{ ns.text | trim }}"
    "{% endif %}{% if not loop.last %}<｜end▁of▁sentence｜>{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)


@dataclass(frozen=True)
class Preset:
    """Sizes of one architecture; the real presets copy the published configs."""

    image_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    mlp: int
    vocab: int
    codebook: int
    vq_channels: int
    vq_res_blocks: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vq_multiplier: tuple[int, ...] = (1, 1, 2, 2, 4)  # the VQ-VAE's channels per level; it halves the size at each
    vq_embed: int = 8  # codebook vector size

    @property
    def patch(self) -> int:
        """Pixels per image token along a side: the VQ-VAE's downsampling."""
        return 2 ** (len(self.vq_multiplier) - 1)

    @property
    def grid(self) -> int:
        """Image tokens along a side."""
        return self.image_size // self.patch


PRESETS: dict[str, Preset] = {
    # 96 px -> a 6x6 grid of 36 tokens: fast enough for every CPU test.
    "tiny": Preset(96, 64, 2, 4, 4, 128, 1024, 256, 32, 1, 32, 1, 2),
    # 192 px -> 12x12 = 144 tokens: the CPU benchmark's model.
    "small": Preset(192, 256, 4, 8, 8, 688, 1024, 1024, 64, 1, 64, 1, 4),
    "janus-pro-1b": Preset(384, 2048, 24, 16, 16, 5632, 102400, 16384, 128, 2, 1024, 24, 16),
    "janus-pro-7b": Preset(384, 4096, 30, 32, 32, 11008, 102400, 16384, 128, 2, 1024, 24, 16),
}

_COLOURS = "red orange yellow green blue purple pink brown black white grey gray cyan magenta gold silver".split()
_THINGS = (
    "circle square triangle star heart moon sun cloud tree house lighthouse mountain river ocean cat dog bird "
    "horse car city street forest flower garden castle robot dragon portrait landscape sky"
).split()
_WORDS = (
    "a an the of in on at with and by under over near behind beside small large big tiny huge two three "
    "top bottom left right center middle corner background foreground painting photo drawing sketch of "
    "dusk dawn night day sunset sunrise rain snow fog light dark bright soft detailed style oil watercolor "
    "digital art cinematic realistic abstract minimal vintage colorful beautiful old new happy quiet"
).split()


def _corpus(seed: int = 0) -> list[str]:
    """English-like sentences covering the words prompts are made of."""
    rng = random.Random(seed)
    lines = [" ".join(words) for words in itertools.product(_COLOURS, _THINGS)]
    for _ in range(4000):
        lines.append(" ".join(rng.choice(_WORDS + _COLOURS + _THINGS) for _ in range(rng.randint(3, 12))))
    return lines


def build_tokenizer(vocab_size: int = 1024, corpus: list[str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the Janus special tokens, learned from `corpus` (default: English-like
    sentences of prompt words); any text encodes."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus() if corpus is None else corpus, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE, "boi_token": BOI, "eoi_token": EOI},
        padding_side="left",
        model_max_length=16384,
    )


def build_processor(preset: Preset, tokenizer: PreTrainedTokenizerFast | None = None,
                    chat_template: str = CHAT_TEMPLATE) -> JanusProcessor:
    """The processor (tokenizer, image processor, chat template) that goes with a preset."""
    tokenizer = tokenizer or build_tokenizer()
    image_processor = JanusImageProcessorPil(size={"height": preset.image_size, "width": preset.image_size})
    return JanusProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
        num_image_tokens=preset.grid**2,
    )


def build_config(preset: Preset, tokenizer: PreTrainedTokenizerFast) -> JanusConfig:
    """A JanusConfig of the preset's sizes whose special ids point into the tokenizer."""
    text = LlamaConfig(
        vocab_size=max(preset.vocab, len(tokenizer)),
        hidden_size=preset.hidden,
        intermediate_size=preset.mlp,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.kv_heads,
        max_position_embeddings=16384,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # JanusConfig sizes the VQ token grid from the vision encoder's patches: the same grid both ways.
    vision = JanusVisionConfig(
        hidden_size=preset.vision_hidden,
        num_hidden_layers=preset.vision_layers,
        num_attention_heads=preset.vision_heads,
        image_size=preset.image_size,
        patch_size=preset.patch,
        projection_dim=preset.hidden,
        num_image_tokens=preset.grid**2,
    )
    vq = JanusVQVAEConfig(
        num_embeddings=preset.codebook,
        embed_dim=preset.vq_embed,
        base_channels=preset.vq_channels,
        latent_channels=min(256, preset.vq_channels * 2),
        num_res_blocks=preset.vq_res_blocks,
        channel_multiplier=list(preset.vq_multiplier),
        projection_dim=preset.hidden,
        image_token_embed_dim=preset.hidden,
    )
    return JanusConfig(
        text_config=text,
        vision_config=vision,
        vq_config=vq,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
    )


def build_model(
    preset: str | Preset,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """Random weights of a preset, built in memory on `device` (no file: a 7B model stays in bf16 on the GPU)."""
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    processor = build_processor(spec)
    config = build_config(spec, processor.tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = JanusForConditionalGeneration(config).to(dtype)
    # As in the published checkpoints, so transformers' own generate(generation_mode="image") runs too.
    model.generation_config = GenerationConfig(
        bos_token_id=processor.tokenizer.bos_token_id,
        eos_token_id=processor.tokenizer.eos_token_id,
        pad_token_id=processor.tokenizer.pad_token_id,
        guidance_scale=5.0,
        generation_kwargs={"boi_token_id": processor.tokenizer.convert_tokens_to_ids(BOI)},
    )
    if spec.hidden <= 256:
        # Default init gives near-uniform logits at these sizes; wider heads make greedy decoding
        # and sampling tell tokens apart the way a trained model does.
        with torch.no_grad():
            model.model.generation_head.vision_head.weight.mul_(8)
    return model.eval(), processor


def build_memory_problem(preset: str, device: torch.device) -> str | None:
    """Why building random weights of the named preset on `device` would not fit in its free memory, or None.

    build_model makes the weights in float32 before any cast, so that is what it needs; found out beforehand
    because a process that runs out of memory is killed by the kernel, without a word.
    """
    spec = PRESETS[preset]
    with torch.device("meta"):  # shapes only, no memory
        model = JanusForConditionalGeneration(build_config(spec, build_processor(spec).tokenizer))
    need = 4 * sum(p.numel() for p in model.parameters())
    free = _free_bytes(device)
    if free is None or need < 0.9 * free:
        return None
    return (f"Random {preset} weights take {need / 1e9:.1f} GB to build and {device.type} has {free / 1e9:.1f} "
            f"GB free; pick a smaller preset or another device.")


def _free_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device` (on a CPU, the kernel's MemAvailable), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def make_model(out_dir: str | Path, preset: str | Preset = "tiny", *, seed: int = 0) -> Path:
    """Build a random checkpoint and save it with `save_pretrained`, as the published ones are."""
    model, processor = build_model(preset, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# -- `janus-bot make-model` ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the checkpoint to (made if missing); "
                                                           "give it to --model")
    parser.add_argument("--preset", default="tiny", help="tiny, small, janus-pro-1b or janus-pro-7b (default tiny): "
                                                         "the real models' shapes, for benchmarks and tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")


@command
def run(args: argparse.Namespace) -> int:
    """Save a random checkpoint of a preset; one too large for free memory is refused before building."""
    if args.preset not in PRESETS:
        raise UsageError(f"Unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}.")
    problem = build_memory_problem(args.preset, torch.device("cpu"))
    if problem:
        raise UsageError(problem)
    quiet_transformers()
    out = make_model(writable_dir(args.out_dir), args.preset, seed=args.seed)
    print(f"saved a random {args.preset} checkpoint to {out}")
    return 0
