"""Train the demo model on CPU: the VQ-VAE on scene pictures, then the generation path on caption -> tokens.

Stage 1 trains Janus's `vqmodel`: the decoder and the l2-normalised codebook learn to draw each cell's
code, the encoder to find it again. Stage 2 trains the language model, `generation_embeddings`,
`generation_aligner` and `generation_head` by teacher forcing on exactly the sequences the engine builds
(prompt ids, then image-token embeddings), with the caption replaced as the unconditional rows are a
tenth of the time so classifier-free guidance works.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor, JanusVQVAE

from generator.demo import scenes
from generator.presets import Preset, build_config, build_processor
from generator.prompt import encode_prompt, unconditional_ids

log = logging.getLogger(__name__)

# 48 px -> a 3x3 grid of 9 tokens: one token per scene cell. The VQ-VAE keeps 128 channels at every level:
# its GroupNorms (32 groups) standardise each group over the whole picture, and with fewer than ~4 channels
# a group cannot tell one flat colour from another. No extra residual blocks keeps it fast on a CPU.
DEMO = Preset(image_size=scenes.IMAGE_SIZE, hidden=128, layers=4, heads=4, kv_heads=4, mlp=384, vocab=1024,
              codebook=512, vq_channels=128, vq_res_blocks=0, vision_hidden=32, vision_layers=1, vision_heads=2)
VQ_CHANNELS = (1, 1, 1, 1, 1)


@dataclass(frozen=True)
class Budget:
    """How long each stage trains."""

    vq_steps: int = 1000
    vq_batch: int = 8
    vq_lr: float = 3e-4  # higher rates collapse the decoder to the mean picture
    scenes: int = 16000  # training scenes for stage 2
    lm_steps: int = 1000
    lm_batch: int = 96
    lm_lr: float = 2e-3
    uncond: float = 0.1  # fraction of rows trained without their caption


def build_demo(seed: int = 0) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """Fresh weights of the demo architecture, with its tokenizer and chat template."""
    processor = build_processor(DEMO)
    config = build_config(DEMO, processor.tokenizer)
    config.vq_config.channel_multiplier = list(VQ_CHANNELS)
    torch.manual_seed(seed)
    return JanusForConditionalGeneration(config), processor


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB pictures as the VQ model's input, values in [-1, 1].  # [n, 3, H, W]"""
    array = np.stack([np.asarray(image.convert("RGB")) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


# -- stage 1: VQ-VAE --------------------------------------------------------------------------------


def _codebook(vq: JanusVQVAE) -> torch.Tensor:
    return F.normalize(vq.quantize.embedding.weight, dim=-1)  # [K, D], as get_codebook_entry sees it


def encode(vq: JanusVQVAE, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm latents and their nearest codes.  # [n, D, g, g], [n, g*g]"""
    z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    codes = (flat @ _codebook(vq).T).argmax(-1)
    return z, codes.view(z.shape[0], -1)


def scene_codes(scene: scenes.Scene) -> list[int]:
    """The code of each cell, raster order: its background alone, or (background, colour, kind, size)."""
    colours, kinds, sizes = scenes.COLOURS, scenes.KINDS, list(scenes.SIZES)
    bg = colours.index(scene.background)
    codes = [bg] * (scenes.CELLS * scenes.CELLS)
    for shape in scene.shapes:
        kind = (bg * len(colours) + colours.index(shape.colour)) * len(kinds) + kinds.index(shape.kind)
        codes[shape.cell[0] * scenes.CELLS + shape.cell[1]] = len(colours) + kind * len(sizes) + sizes.index(shape.size)
    return codes


def code_attributes(code: int) -> tuple[str, ...]:
    """What a cell code stands for, size aside: (background,) or (background, colour, kind)."""
    colours, kinds, sizes = scenes.COLOURS, scenes.KINDS, list(scenes.SIZES)
    if code < len(colours):
        return (colours[code],)
    kind, _size = divmod(code - len(colours), len(sizes))
    pair, kind_index = divmod(kind, len(kinds))
    return colours[pair // len(colours)], colours[pair % len(colours)], kinds[kind_index]


def codes_follow(scene: scenes.Scene, codes: list[int]) -> bool:
    """Whether a code grid draws the scene, size aside; unplaced pairs ("two ...") may sit anywhere."""
    in_use = len(scenes.COLOURS) + len(scenes.COLOURS) ** 2 * len(scenes.KINDS) * len(scenes.SIZES)
    want = [code_attributes(c) for c in scene_codes(scene)]
    got = [code_attributes(c) if c < in_use else ("unused",) for c in codes]
    return got == want if scene.positioned else sorted(got) == sorted(want)


def train_vq(vq: JanusVQVAE, budget: Budget, seed: int, report: Callable[[str], None]) -> dict[str, float]:
    """Decoder and codebook learn to draw each cell's code; the encoder learns to find the code again.

    The code of a cell is given by what the scene holds there (`scene_codes`) rather than found by
    nearest-neighbour search: an unsupervised VQ-VAE of this architecture does not settle within a CPU
    budget of minutes, while this one does. The quantizer is the real one: l2-normalised codebook lookup
    on the way down (`encode`), `get_codebook_entry` on the way up.
    """
    vq.train()
    rng = random.Random(seed)
    optimiser = torch.optim.Adam(vq.parameters(), lr=budget.vq_lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=budget.vq_lr, total_steps=budget.vq_steps,
                                                   pct_start=0.05)
    rec_sum, hit_sum = 0.0, 0.0
    for step in range(budget.vq_steps):
        batch = [scene for scene, _ in scenes.sample(budget.vq_batch, rng.getrandbits(32))]
        pixels = to_pixels([scenes.render(scene) for scene in batch])
        codes = torch.tensor([scene_codes(scene) for scene in batch])  # [n, g*g]
        book = _codebook(vq)
        n, g = len(batch), scenes.CELLS
        q = book[codes].view(n, g, g, -1).permute(0, 3, 1, 2)
        recon = vq.decoder(vq.post_quant_conv(q))
        # Shapes cover a few percent of the pixels: weigh them up, or the decoder learns backgrounds only.
        background = torch.tensor([scenes.PALETTE[s.background] for s in batch]).view(n, 3, 1, 1) / 127.5 - 1
        weight = 1 + 7 * ((pixels - background).abs().sum(1, keepdim=True) > 0.01).float()
        error = ((recon - pixels) ** 2 * weight).mean() / weight.mean()
        rec_loss = F.mse_loss(recon, pixels)
        z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)
        logits = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]) @ book.T * 10  # cosine similarity / 0.1
        shape_cells = 1 + 4 * (codes.flatten() >= len(scenes.COLOURS)).float()
        found = F.cross_entropy(logits, codes.flatten(), reduction="none")
        loss = error + 0.1 * (found * shape_cells).sum() / shape_cells.sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        rec_sum += rec_loss.item()
        hit_sum += (logits.argmax(-1) == codes.flatten()).float().mean().item()
        if (step + 1) % 50 == 0:
            report(f"vq step {step + 1}/{budget.vq_steps}: reconstruction {rec_sum / 50:.4f}, "
                   f"encoder finds the code {hit_sum / 50:.3f}")
            rec_sum, hit_sum = 0.0, 0.0
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(_codebook(vq))  # decode normalises again: a no-op
    vq.eval()
    return {"reconstruction_mse": float(rec_loss.item())}


@torch.inference_mode()
def tokenise(vq: JanusVQVAE, pictures: list[scenes.Scene], chunk: int = 256) -> torch.Tensor:
    """Code grids of scenes, in raster order.  # [n, g*g]"""
    out = [encode(vq, to_pixels([scenes.render(s) for s in pictures[i: i + chunk]]))[1]
           for i in range(0, len(pictures), chunk)]
    return torch.cat(out)


# -- stage 2: caption -> tokens ----------------------------------------------------------------------


def generation_parameters(model: JanusForConditionalGeneration) -> list[torch.nn.Parameter]:
    """What stage 2 trains: the language model and the generation embeddings, aligner and head."""
    parts = [model.model.language_model, model.model.generation_embeddings, model.model.generation_aligner,
             model.model.generation_head]
    return [p for part in parts for p in part.parameters()]


def batch_inputs(model: JanusForConditionalGeneration, prompts: list[list[int]], tokens: torch.Tensor,
                 pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Left-padded prompts then image-token embeddings, as the engine lays them out.

    Returns embeddings [B, L + T - 1, H], attention mask [B, 1, S, S], position ids [B, S] and L.
    """
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), length + tokens.shape[1] - 1, dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        ids[i, length - len(prompt):] = torch.tensor(prompt)
        mask[i, length - len(prompt):] = True
    embeds = torch.cat([model.get_input_embeddings()(ids),
                        model.prepare_embeddings_for_image_generation(tokens[:, :-1])], dim=1)
    size = mask.shape[1]
    causal = torch.ones(size, size, dtype=torch.bool).tril()
    attn = (causal & mask[:, None, :]) | torch.eye(size, dtype=torch.bool)
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return embeds, attn[:, None], position_ids, length


def image_logits(model: JanusForConditionalGeneration, prompts: list[list[int]], tokens: torch.Tensor,
                 pad_id: int) -> torch.Tensor:
    """Teacher-forced codebook logits for every image token.  # [B, T, K]"""
    embeds, attn, position_ids, length = batch_inputs(model, prompts, tokens, pad_id)
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=attn,
                                        position_ids=position_ids).last_hidden_state
    return model.model.generation_head(hidden[:, length - 1:])


def train_lm(model: JanusForConditionalGeneration, processor: JanusProcessor, captions: list[list[str]],
             tokens: torch.Tensor, budget: Budget, seed: int, report: Callable[[str], None]) -> dict[str, float]:
    """Next-image-token cross-entropy on caption -> token-grid pairs, some captions dropped."""
    model.train()
    rng = random.Random(seed)
    pad_id = processor.tokenizer.pad_token_id
    params = generation_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=budget.lm_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=budget.lm_lr, total_steps=budget.lm_steps,
                                                   pct_start=0.05)
    cache: dict[str, list[int]] = {}
    loss_sum, correct, total = 0.0, 0, 0
    last: dict[str, float] = {}
    for step in range(budget.lm_steps):
        index = [rng.randrange(len(tokens)) for _ in range(budget.lm_batch)]
        prompts = []
        for i in index:
            text = rng.choice(captions[i])
            ids = cache.get(text) or cache.setdefault(text, encode_prompt(processor, text))
            prompts.append(unconditional_ids(ids, processor) if rng.random() < budget.uncond else ids)
        target = tokens[index]
        logits = image_logits(model, prompts, target, pad_id)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        loss_sum += loss.item()
        correct += int((logits.argmax(-1) == target).sum())
        total += target.numel()
        if (step + 1) % 50 == 0 or step + 1 == budget.lm_steps:
            last = {"loss": loss_sum / (total // target[0].numel() // budget.lm_batch),
                    "token_accuracy": correct / total}
            report(f"lm step {step + 1}/{budget.lm_steps}: loss {last['loss']:.3f}, "
                   f"teacher-forced token accuracy {last['token_accuracy']:.3f}")
            loss_sum, correct, total = 0.0, 0, 0
    model.eval()
    return last


# -- the whole recipe --------------------------------------------------------------------------------


def train(out_dir: str | Path, *, seed: int = 0, threads: int = 2, budget: Budget | None = None,
          report: Callable[[str], None] = print) -> dict[str, object]:
    """Train both stages and save the checkpoint; returns what the model card records."""
    budget = budget or Budget()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model, processor = build_demo(seed)

    report(f"stage 1: VQ-VAE, {budget.vq_steps} steps of {budget.vq_batch} pictures")
    t0 = time.perf_counter()
    vq_stats = train_vq(model.model.vqmodel, budget, seed, report)
    vq_time = time.perf_counter() - t0

    rng = random.Random(seed + 1)
    pairs = scenes.sample(budget.scenes, seed + 1)
    captions = [[text] + [scenes.caption(scene, rng) for _ in range(3)] for scene, text in pairs]
    tokens = torch.tensor([scene_codes(scene) for scene, _ in pairs])  # what the encoder learned to output
    check = [scene for scene, _ in scenes.sample(512, seed + 3)]
    truth = torch.tensor([scene_codes(s) for s in check])
    agree = float((tokenise(model.model.vqmodel, check) == truth).float().mean())
    report(f"the encoder finds {agree:.1%} of held-aside cells' codes")

    report(f"stage 2: generation path, {budget.lm_steps} steps of {budget.lm_batch} sequences")
    t0 = time.perf_counter()
    lm_stats = train_lm(model, processor, captions, tokens, budget, seed + 2, report)
    lm_time = time.perf_counter() - t0

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(out)  # as the published checkpoints are; loads as fp32 on CPU
    processor.save_pretrained(out)
    stats: dict[str, object] = {
        "seed": seed,
        "threads": threads,
        "budget": asdict(budget),
        "seconds": {"vq": round(vq_time), "lm": round(lm_time),
                    "total": round(time.perf_counter() - started)},
        "vq": vq_stats | {"encoder_agreement": agree},
        "lm": lm_stats,
        "parameters": params,
    }
    (out / "training.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats
