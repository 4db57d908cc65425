"""Train the demo model on CPU: the VQ-VAE on scene pictures, then both directions of the language model, then
those again on captions in more sentence frames.

Stage 1 trains Janus's `vqmodel`: the decoder and the l2-normalised codebook learn to draw each token's code, then
the encoder to find it again. Stage 2 trains the rest together, a batch of each direction per step:
- drawing: the language model, `generation_embeddings`, `generation_aligner` and `generation_head`, teacher-forced
  on exactly the sequences the engine builds (prompt ids, then image-token embeddings), from captions that name all
  or part of a scene (what they leave open was drawn at random), a tenth of them replaced as the unconditional rows
  are (and those rows label-smoothed) so classifier-free guidance works, a few swapped for another scene's;
- reading: the vision encoder, `aligner` and the language model's text output, teacher-forced on describe's own
  prompt (`generator.describe`) answered with a caption naming every attribute.
Stage 3 trains as stage 2 does, shorter and at a lower learning rate, on fresh scenes whose captions may also take
`scenes.FRAMES_LINKED`: words after a joiner that name no shape.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor, JanusVQVAE, PreTrainedTokenizerFast

from generator import presets
from generator.cli import command, quiet_transformers, writable_dir
from generator.demo import scenes
from generator.describe import DEFAULT_INSTRUCTION, describe_prompt
from generator.presets import Preset, build_config
from generator.prompt import encode_prompt, unconditional_ids

log = logging.getLogger(__name__)

# 48 px -> a 6x6 grid of 36 tokens, 8 px each: a scene cell is 2x2 tokens. Three VQ levels (48 -> 6), 128
# channels at every level: its GroupNorms (32 groups) standardise each group over the whole picture, and
# with fewer than ~4 channels a group cannot tell one flat colour from another. No extra residual blocks
# keeps it fast on a CPU. The vision encoder reads the same 8 px patches.
DEMO = Preset(image_size=scenes.IMAGE_SIZE, hidden=128, layers=4, heads=4, kv_heads=4, mlp=384, vocab=1024,
              codebook=256, vq_channels=128, vq_res_blocks=0, vision_hidden=64, vision_layers=2, vision_heads=4,
              vq_multiplier=(1, 1, 1, 1), vq_embed=32)
GRID = DEMO.grid
TOKENS_PER_CELL = GRID // scenes.CELLS  # along a side

# Other ways operators may ask ([describe] instruction); the demo answers them all with a full caption.
INSTRUCTIONS = ["Describe this picture.", "What is in this image?", "Write a prompt for this picture.",
                "Caption this image.", "Describe the image in one sentence."]


@dataclass(frozen=True)
class Budget:
    """How long each stage trains."""

    vq_steps: int = 1000  # the decoder's
    vq_batch: int = 16
    vq_lr: float = 1e-3
    encoder_steps: int = 200
    scenes: int = 24000  # training scenes for stage 2
    lm_steps: int = 4500
    lm_batch: int = 96
    lm_lr: float = 2e-3
    decision_weight: float = 5.0  # how much more the tokens that decide a picture count in the loss
    identity_weight: float = 10.0  # and the token that says which shape (colour, kind, size) a START begins
    uncond: float = 0.1  # fraction of rows trained without their caption
    uncond_smoothing: float = 0.8  # label smoothing on those rows
    mismatch: float = 0.03  # share of captioned rows that read another scene's caption, as alt text often does
    describe_batch: int = 24  # pictures answered per step
    describe_weight: float = 1.0  # the reading loss's weight beside the drawing loss
    decoded: int = 2048  # training scenes whose VQ-decoded pictures (what imagine shows) describe also reads
    tune_steps: int = 400  # stage 3, as stage 2 with these steps, learning rate, scenes and decoded pictures
    tune_lr: float = 5e-4
    tune_scenes: int = 12000
    tune_decoded: int = 1024


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The BPE tokenizer of `generator.presets` learned from the demo's language (training captions, describe's
    answers and instructions): any text encodes, the caption words as whole tokens."""
    rng = random.Random(0)
    corpus = [c.text for c in scenes.sample_captions(30000, 11)] + [DEFAULT_INSTRUCTION, *INSTRUCTIONS] * 50
    corpus += [scenes.full_caption(scene, rng) for scene, _ in scenes.sample(5000, 12)]
    return presets.build_tokenizer(corpus=corpus)


def build_demo(seed: int = 0) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """Fresh weights of the demo architecture, with its tokenizer and chat template."""
    processor = presets.build_processor(DEMO, build_tokenizer())
    config = build_config(DEMO, processor.tokenizer)
    torch.manual_seed(seed)
    return JanusForConditionalGeneration(config), processor


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB pictures as the VQ model's input, values in [-1, 1].  # [n, 3, H, W]"""
    array = np.stack([np.asarray(image.convert("RGB")) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


# -- the code of each token -------------------------------------------------------------------------


SHAPE_QUARTERS = TOKENS_PER_CELL**2 - 1  # a shape's tokens after its first
START = len(scenes.COLOURS)  # the code of a shape's first token, whatever the shape
SHAPE_CODES = len(scenes.COLOURS) * len(scenes.KINDS) * len(scenes.SIZES) * SHAPE_QUARTERS
IN_USE = START + 1 + SHAPE_CODES  # codes the scenes use; the rest of the codebook stays unused


def cell_tokens(cell: tuple[int, int]) -> list[int]:
    """The raster indices of a scene cell's tokens, its quarters in raster order."""
    t = TOKENS_PER_CELL
    return [(cell[0] * t + dy) * GRID + cell[1] * t + dx for dy in range(t) for dx in range(t)]


def scene_codes(scene: scenes.Scene) -> list[int]:
    """The code of each token, raster order.

    A background token's code is its colour. A shape's first token (its cell's top-left quarter) is START, the
    same for every shape, and its other three are (colour, kind, size, which quarter), whatever the background.
    In raster order the model first decides that a shape begins here and then which one: were the two one token,
    guidance would multiply the odds of starting a prompt's named shape at every cell it passes, and an open
    position would always be the first free cell. The decoder draws the first quarter from its neighbours.
    """
    colours, kinds, sizes = scenes.COLOURS, scenes.KINDS, list(scenes.SIZES)
    codes = [colours.index(scene.background)] * GRID**2
    for shape in scene.shapes:
        index = (colours.index(shape.colour) * len(kinds) + kinds.index(shape.kind)) * len(sizes)
        first = START + 1 + (index + sizes.index(shape.size)) * SHAPE_QUARTERS
        tokens = cell_tokens(shape.cell)
        codes[tokens[0]] = START
        for quarter, token in enumerate(tokens[1:]):
            codes[token] = first + quarter
    return codes


def code_attributes(code: int) -> tuple[str | int, ...]:
    """What a token's code stands for, size aside: (background,), ("start",), (colour, kind, quarter) for quarters
    1-3 of a shape, or ("unused",)."""
    colours, kinds, sizes = scenes.COLOURS, scenes.KINDS, list(scenes.SIZES)
    if code < START:
        return (colours[code],)
    if code == START:
        return ("start",)
    if code >= IN_USE:
        return ("unused",)
    index, quarter = divmod(code - START - 1, SHAPE_QUARTERS)
    colour, kind = divmod(index // len(sizes), len(kinds))
    return colours[colour], kinds[kind], quarter + 1


def _cells(codes: list[int]) -> list[tuple[tuple[str | int, ...], ...]]:
    """Each scene cell's tokens' attributes, cells in raster order."""
    return [tuple(code_attributes(codes[token]) for token in cell_tokens((row, col)))
            for row in range(scenes.CELLS) for col in range(scenes.CELLS)]


def codes_follow(scene: scenes.Scene, codes: list[int]) -> bool:
    """Whether a code grid draws the scene, size aside; unplaced pairs ("two ...") may sit in any cells."""
    want, got = _cells(scene_codes(scene)), _cells(codes)
    return got == want if scene.positioned else sorted(got) == sorted(want)


def decision_tokens(scene: scenes.Scene) -> list[bool]:
    """The tokens that decide a picture, raster order: the first token of every cell (background, or a shape
    begins) and a shape's other three (which shape, then the same again a row below).

    Which tokens these are never depends on the token's own value, only on what came before it (a shape's
    tokens follow its START), so weighing them up leaves the probabilities the model learns as they are; it
    only spends more of its effort there. Unweighted, nearly all of the loss is background tokens that copy
    their neighbour.
    """
    marked = [False] * GRID**2
    for row in range(scenes.CELLS):
        for col in range(scenes.CELLS):
            marked[cell_tokens((row, col))[0]] = True
    for shape in scene.shapes:
        for token in cell_tokens(shape.cell):
            marked[token] = True
    return marked


def identity_tokens(scene: scenes.Scene) -> list[bool]:
    """The token after each shape's START, raster order: the one that says which shape it is. It follows a START,
    whatever the shape, so it too is known from what came before it (see `decision_tokens`)."""
    marked = [False] * GRID**2
    for shape in scene.shapes:
        marked[cell_tokens(shape.cell)[1]] = True
    return marked


# -- stage 1: VQ-VAE --------------------------------------------------------------------------------


def _codebook(vq: JanusVQVAE) -> torch.Tensor:
    return F.normalize(vq.quantize.embedding.weight, dim=-1)  # [K, D], as get_codebook_entry sees it


def _latents(vq: JanusVQVAE, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm latents of every token, raster order within each picture.  # [n * g*g, D]"""
    z = F.normalize(vq.quant_conv(vq.encoder(pixels)), dim=1)
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def encode(vq: JanusVQVAE, pixels: torch.Tensor) -> torch.Tensor:
    """Each token's nearest code.  # [n, g*g]"""
    return (_latents(vq, pixels) @ _codebook(vq).T).argmax(-1).view(len(pixels), -1)


def _shape_weights(batch: list[scenes.Scene]) -> torch.Tensor:
    """8 over each shape's box and a pixel around it, 1 elsewhere.  # [n, 1, H, W]

    Shapes cover a few percent of a picture: unweighted, the decoder learns backgrounds only. The box, not
    the shape's own pixels, is what is weighed up: a circle's corners are background, and weighing only
    shape pixels teaches the decoder to paint them (small circles come out square).
    """
    size = scenes.IMAGE_SIZE
    weight = torch.ones(len(batch), 1, size, size)
    for i, scene in enumerate(batch):
        for shape in scene.shapes:
            x0, y0, x1, y1 = scenes.box(shape)
            weight[i, 0, max(0, y0 - 1): y1 + 2, max(0, x0 - 1): x1 + 2] = 8
    return weight


def _schedule(optimiser: torch.optim.Optimizer, lr: float, steps: int, warmup: float = 0.02
              ) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                               pct_start=max(warmup, 2 / steps))


def train_vq(vq: JanusVQVAE, budget: Budget, seed: int, report: Callable[[str], None]) -> dict[str, float]:
    """The decoder and codebook learn to draw each token's code; then the encoder learns to find the code.

    The code of a token is given by what the scene holds there (`scene_codes`) rather than found by
    nearest-neighbour search: an unsupervised VQ-VAE of this architecture does not settle within a CPU
    budget of minutes, while this one does. The quantizer is the real one: l2-normalised codebook lookup
    on the way down (`encode`), `get_codebook_entry` on the way up.
    """
    vq.train()
    rng = random.Random(seed)
    decoder = [*vq.decoder.parameters(), *vq.post_quant_conv.parameters(), vq.quantize.embedding.weight]
    optimiser = torch.optim.Adam(decoder, lr=budget.vq_lr)
    schedule = _schedule(optimiser, budget.vq_lr, budget.vq_steps)
    rec_sum = 0.0
    for step in range(budget.vq_steps):
        # Half the batch holds two shapes in neighbouring cells: the gap between them has no background
        # token beside it, so the decoder must bring the background colour from further away.
        half = budget.vq_batch // 2
        batch = [scene for scene, _ in scenes.sample(budget.vq_batch - half, rng.getrandbits(32))
                 + scenes.sample(half, rng.getrandbits(32), neighbours=True)]
        pixels = to_pixels([scenes.render(scene) for scene in batch])
        codes = torch.tensor([scene_codes(scene) for scene in batch])  # [n, g*g]
        q = _codebook(vq)[codes].view(len(batch), GRID, GRID, -1).permute(0, 3, 1, 2)
        recon = vq.decoder(vq.post_quant_conv(q))
        weight = _shape_weights(batch)
        error = recon - pixels
        loss = ((error.abs() + error**2) * weight).mean() / weight.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder, 1.0)
        optimiser.step()
        schedule.step()
        rec_sum += float((error.detach() ** 2).mean())
        if (step + 1) % 50 == 0:
            report(f"vq decoder step {step + 1}/{budget.vq_steps}: reconstruction mse {rec_sum / 50:.4f}")
            rec_sum = 0.0
    rec_loss = float((error.detach() ** 2).mean())

    encoder = [*vq.encoder.parameters(), *vq.quant_conv.parameters()]
    optimiser = torch.optim.Adam(encoder, lr=budget.vq_lr)
    schedule = _schedule(optimiser, budget.vq_lr, budget.encoder_steps)
    book = _codebook(vq).detach()
    hit_sum = 0.0
    for step in range(budget.encoder_steps):
        batch = [scene for scene, _ in scenes.sample(budget.vq_batch, rng.getrandbits(32))]
        codes = torch.tensor([scene_codes(scene) for scene in batch]).flatten()
        logits = _latents(vq, to_pixels([scenes.render(scene) for scene in batch])) @ book.T * 10  # cosine / 0.1
        loss = F.cross_entropy(logits, codes)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        hit_sum += float((logits.argmax(-1) == codes).float().mean())
        if (step + 1) % 50 == 0:
            report(f"vq encoder step {step + 1}/{budget.encoder_steps}: finds the code {hit_sum / 50:.3f}")
            hit_sum = 0.0
    with torch.no_grad():
        vq.quantize.embedding.weight.copy_(_codebook(vq))  # decode normalises again: a no-op
    vq.eval()
    return {"reconstruction_mse": rec_loss}


@torch.inference_mode()
def tokenise(vq: JanusVQVAE, pictures: list[scenes.Scene], chunk: int = 256) -> torch.Tensor:
    """Code grids of scenes, in raster order.  # [n, g*g]"""
    out = [encode(vq, to_pixels([scenes.render(s) for s in pictures[i: i + chunk]]))
           for i in range(0, len(pictures), chunk)]
    return torch.cat(out)


# -- stage 2: drawing and reading ----------------------------------------------------------------------


def trained_parameters(model: JanusForConditionalGeneration) -> list[torch.nn.Parameter]:
    """What stage 2 trains: everything but the VQ-VAE (the text head shares the input embeddings' weights)."""
    frozen = {id(p) for p in model.model.vqmodel.parameters()}
    return [p for p in model.parameters() if id(p) not in frozen]


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


def caption_rows(rng: random.Random, captions: list[list[str]], index: list[int], budget: Budget
                 ) -> list[tuple[int | None, str]]:
    """Which scene's caption each training row reads (None: dropped for guidance), and the text drawn.

    A dropped row keeps its own text only for its length. A `budget.mismatch` share of the others read
    another scene's caption: scraped captions often describe something else, one reason a real model's
    cfg-1 pictures stray from the prompt, and what gives guidance its work here.
    """
    rows: list[tuple[int | None, str]] = []
    for i in index:
        if rng.random() < budget.uncond:
            rows.append((None, rng.choice(captions[i])))
            continue
        caption = i
        if rng.random() < budget.mismatch:
            caption = rng.randrange(len(captions) - 1)
            caption += caption >= i  # any scene but this one
        rows.append((caption, rng.choice(captions[caption])))
    return rows


def reading_prompt(processor: JanusProcessor, instruction: str) -> list[int]:
    """describe's prompt ids for one picture (its placeholder expanded), as `generator.describe` builds them."""
    blank = Image.new("RGB", (DEMO.image_size, DEMO.image_size))
    return processor(text=describe_prompt(processor, instruction), images=[blank])["input_ids"][0].tolist()


def reading_logits(model: JanusForConditionalGeneration, pixel_values: torch.Tensor, rows: list[list[int]],
                   pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced text logits of right-padded rows (describe's prompt, then an answer), and the mask of the
    real tokens.  # [B, L, V], [B, L]"""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return model(input_ids=ids, pixel_values=pixel_values, attention_mask=mask).logits, mask


@dataclass
class Pool:
    """Stage 2's material: training scenes with captions (all or part of each scene named), code grids, decision
    tokens, and for the first few their VQ-decoded pictures (what imagine shows and describe then reads)."""

    scenes: list[scenes.Scene]
    captions: list[list[str]]
    codes: torch.Tensor  # [n, g*g]
    decisions: torch.Tensor  # [n, g*g] bool
    identities: torch.Tensor  # [n, g*g] bool
    decoded: list[Image.Image]


def make_pool(vq: JanusVQVAE, budget: Budget, seed: int, *, linked: bool = False) -> Pool:
    """`budget.scenes` training scenes with four captions each (`linked` as for `scenes.phrase`); the decoded
    pictures from the trained VQ-VAE."""
    rng = random.Random(seed)
    drawn = scenes.sample_captions(budget.scenes, seed, linked=linked)
    captions = [[c.text] + [scenes.caption(c.scene, rng, linked=linked) for _ in range(3)] for c in drawn]
    pictures = [c.scene for c in drawn]
    codes = torch.tensor([scene_codes(scene) for scene in pictures])  # what the encoder learned to output
    decoded: list[Image.Image] = []
    with torch.inference_mode():
        for part in codes[: budget.decoded].split(64):
            x = vq.decode(part)
            decoded += [Image.fromarray(a) for a in
                        ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)]
    decisions = torch.tensor([decision_tokens(scene) for scene in pictures])
    identities = torch.tensor([identity_tokens(scene) for scene in pictures])
    return Pool(pictures, captions, codes, decisions, identities, decoded)


def train_lm(model: JanusForConditionalGeneration, processor: JanusProcessor, pool: Pool, budget: Budget,
             seed: int, report: Callable[[str], None]) -> dict[str, float]:
    """Each step: next-image-token cross-entropy on caption -> code-grid rows (some captions dropped or swapped),
    and next-word cross-entropy on describe's prompt -> full caption rows.

    Decision tokens (`decision_tokens`) count `budget.decision_weight` times in the drawing loss, a shape's identity
    token (`identity_tokens`) `budget.identity_weight` times.
    """
    model.train()
    rng = random.Random(seed)
    pad_id, eos_id = processor.tokenizer.pad_token_id, processor.tokenizer.eos_token_id
    params = trained_parameters(model)
    optimiser = torch.optim.AdamW(params, lr=budget.lm_lr, weight_decay=0.01)
    schedule = _schedule(optimiser, budget.lm_lr, budget.lm_steps, warmup=0.05)
    cache: dict[str, list[int]] = {}
    prompts = {text: reading_prompt(processor, text) for text in [DEFAULT_INSTRUCTION, *INSTRUCTIONS]}
    sums: dict[str, float] = {}
    last: dict[str, float] = {}

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value

    for step in range(budget.lm_steps):
        index = [rng.randrange(len(pool.codes)) for _ in range(budget.lm_batch)]
        rows = caption_rows(rng, pool.captions, index, budget)
        ids, dropped = [], [caption is None for caption, _ in rows]
        for caption, text in rows:
            prompt = cache.get(text) or cache.setdefault(text, encode_prompt(processor, text))
            ids.append(prompt if caption is not None else unconditional_ids(prompt, processor))
        target = pool.codes[index]
        logits = image_logits(model, ids, target, pad_id)
        decisions = pool.decisions[index]
        weight = (1 + (budget.decision_weight - 1) * decisions.float()
                  + (budget.identity_weight - budget.decision_weight) * pool.identities[index].float())
        log_p = logits.log_softmax(-1)
        nll = -log_p.gather(-1, target[..., None])[..., 0]  # [B, T]
        # Guidance divides by the unconditional probability to the power cfg - 1: a code the unconditional
        # rows rule out entirely would win whenever the conditional rows merely doubt it. Label smoothing
        # on those rows keeps every code's unconditional probability above a floor.
        smooth = torch.tensor(dropped)[:, None] * budget.uncond_smoothing
        loss = ((((1 - smooth) * nll - smooth * log_p.mean(-1)) * weight).sum() / weight.sum())
        right = logits.argmax(-1) == target
        add("loss", loss.item())
        add("token_accuracy", float(right.float().mean()))
        add("decision_accuracy", float(right[decisions].float().mean()))

        if budget.describe_batch:
            picks = [rng.randrange(len(pool.scenes)) for _ in range(budget.describe_batch)]
            images = [pool.decoded[i] if i < len(pool.decoded) and rng.random() < 0.5 else scenes.render(pool.scenes[i])
                      for i in picks]
            pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
            reading = []
            for i in picks:
                answer = scenes.full_caption(pool.scenes[i], rng)
                ids = cache.get(answer) or cache.setdefault(
                    answer, processor.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [eos_id])
                instruction = DEFAULT_INSTRUCTION if rng.random() < 0.85 else rng.choice(INSTRUCTIONS)
                reading.append((prompts[instruction], ids))
            text_logits, mask = reading_logits(model, pixel_values, [p + a for p, a in reading], pad_id)
            answer_mask = mask.clone()
            for r, (prompt, _) in enumerate(reading):
                answer_mask[r, : len(prompt)] = 0  # only the answer is learned
            targets = torch.tensor([[*(p + a)[1:], *[pad_id] * (mask.shape[1] - len(p + a))] for p, a in reading])
            keep = answer_mask[:, 1:].bool()
            read_loss = F.cross_entropy(text_logits[:, :-1][keep], targets[keep])
            loss = loss + budget.describe_weight * read_loss
            said = text_logits[:, :-1].argmax(-1) == targets
            add("describe_loss", read_loss.item())
            add("describe_token_accuracy", float(said[keep].float().mean()))

        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        schedule.step()
        if (step + 1) % 50 == 0 or step + 1 == budget.lm_steps:
            count = (step % 50) + 1
            last = {name: value / count for name, value in sums.items()}
            report(f"lm step {step + 1}/{budget.lm_steps}: loss {last['loss']:.3f}, teacher-forced token accuracy "
                   f"{last['token_accuracy']:.3f}, decision tokens {last['decision_accuracy']:.3f}"
                   + (f"; describe loss {last['describe_loss']:.3f}, words {last['describe_token_accuracy']:.3f}"
                      if budget.describe_batch else ""))
            sums = {}
    model.eval()
    return last


def tune(model: JanusForConditionalGeneration, processor: JanusProcessor, budget: Budget, seed: int,
         report: Callable[[str], None]) -> dict[str, float]:
    """Stage 3: stage 2 again for `budget.tune_steps` steps at `budget.tune_lr`, on fresh scenes whose captions may
    also take `scenes.FRAMES_LINKED`.

    A model that learned the other frames alone reads any word after a joiner that is not a background as another
    shape: "a blue background, and on it a red circle" drew two. On the stage-2 model (v5) these steps took
    eval-demo's phrasing score from 0.77 to 0.86 (docs/benchmarks.md).
    """
    stage = replace(budget, lm_steps=budget.tune_steps, lm_lr=budget.tune_lr, scenes=budget.tune_scenes,
                    decoded=budget.tune_decoded)
    pool = make_pool(model.model.vqmodel, stage, seed, linked=True)
    return train_lm(model, processor, pool, stage, seed + 1, report)


# -- the whole recipe --------------------------------------------------------------------------------


def train(out_dir: str | Path, *, seed: int = 0, threads: int = 2, budget: Budget | None = None,
          report: Callable[[str], None] = print) -> dict[str, object]:
    """Train both stages and save the checkpoint; returns what the model card records."""
    budget = budget or Budget()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model, processor = build_demo(seed)

    report(f"stage 1: VQ-VAE, {budget.vq_steps} decoder then {budget.encoder_steps} encoder steps "
           f"of {budget.vq_batch} pictures")
    t0 = time.perf_counter()
    vq_stats = train_vq(model.model.vqmodel, budget, seed, report)
    vq_time = time.perf_counter() - t0

    check = [scene for scene, _ in scenes.sample(512, seed + 3)]
    truth = torch.tensor([scene_codes(s) for s in check])
    agree = float((tokenise(model.model.vqmodel, check) == truth).float().mean())
    report(f"the encoder finds {agree:.1%} of held-aside tokens' codes")

    report(f"stage 2: {budget.lm_steps} steps of {budget.lm_batch} caption -> picture and {budget.describe_batch} "
           f"picture -> caption sequences")
    t0 = time.perf_counter()
    pool = make_pool(model.model.vqmodel, budget, seed + 1)
    lm_stats = train_lm(model, processor, pool, budget, seed + 2, report)
    lm_time = time.perf_counter() - t0

    report(f"stage 3: {budget.tune_steps} more steps at learning rate {budget.tune_lr:g}, captions in more frames")
    t0 = time.perf_counter()
    tune_stats = tune(model, processor, budget, seed + 4, report)
    tune_time = time.perf_counter() - t0

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(out)  # as the published checkpoints are; loads as fp32 on CPU
    processor.save_pretrained(out)
    stats: dict[str, object] = {
        "seed": seed,
        "threads": threads,
        "budget": asdict(budget),
        "seconds": {"vq": round(vq_time), "lm": round(lm_time), "tune": round(tune_time),
                    "total": round(time.perf_counter() - started)},
        "vq": vq_stats | {"encoder_agreement": agree},
        "lm": lm_stats,
        "tune": tune_stats,
        "parameters": params,
    }
    (out / "training.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


# -- `janus-bot train-demo` ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR",
                        help="directory to write the checkpoint and its card to (made if missing); give it to --model")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the scenes, captions and weights: the same seed gives the same model (default 0)")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for torch (default 2; about 57 minutes on two cores)")


@command
def run(args: argparse.Namespace) -> int:
    """Train, score on held-out material, and write the model card beside the weights."""
    writable_dir(args.out_dir)  # before the training, not after
    quiet_transformers()
    from generator.demo.card import write_card

    started = time.perf_counter()
    stats = train(args.out_dir, seed=args.seed, threads=args.threads, report=lambda line: print(line, flush=True))
    print(f"trained in {time.perf_counter() - started:.0f}s; scoring on held-out material", flush=True)
    lines = write_card(args.out_dir, stats)
    print("\n".join(lines))
    print(f"saved the demo model to {args.out_dir}")
    return 0
