"""The published text-to-image loop, written plainly from design.md section 3: one prompt at a time.

The engine must match it (greedy tokens, teacher-forced guided logits); the benchmark measures against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generator.checkpoint import Checkpoint
from generator.prompt import cfg_rows


@dataclass
class ReferenceOutput:
    tokens: torch.Tensor  # [n, num_image_tokens]
    logits: torch.Tensor | None  # [n, num_image_tokens, codebook] guided, when recorded


@torch.inference_mode()
def reference_generate(
    checkpoint: Checkpoint,
    prompt: str,
    num_images: int,
    *,
    cfg: float = 5.0,
    temperature: float = 1.0,
    seed: int = 0,
    forced: torch.Tensor | None = None,  # [n, num_image_tokens]: teacher forcing
    record_logits: bool = False,
) -> ReferenceOutput:
    """Interleaved cond/uncond rows, a growing KV cache, softmax sampling (argmax at temperature 0)."""
    model, device = checkpoint.model, checkpoint.device
    ids = cfg_rows(checkpoint.processor, prompt, num_images).to(device)  # [2n, L]
    embeds = model.get_input_embeddings()(ids)
    generator = torch.Generator(device=device).manual_seed(seed)
    cache = None
    tokens, logits_seen = [], []
    for step in range(checkpoint.num_image_tokens):
        out = model.model.language_model(inputs_embeds=embeds, cache=cache, use_cache=True)
        cache = out.cache
        logits = model.model.generation_head(out.last_hidden_state[:, -1]).float()
        cond, uncond = logits[0::2], logits[1::2]
        guided = uncond + cfg * (cond - uncond)
        if temperature == 0:
            token = guided.argmax(dim=-1)
        else:
            probs = torch.softmax(guided / temperature, dim=-1)
            token = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
        if forced is not None:
            token = forced[:, step].to(device)
        tokens.append(token)
        if record_logits:
            logits_seen.append(guided)
        pair = torch.stack([token, token], dim=1).view(-1, 1)  # [2n, 1]
        embeds = model.prepare_embeddings_for_image_generation(pair)
    return ReferenceOutput(
        tokens=torch.stack(tokens, dim=1).cpu(),
        logits=torch.stack(logits_seen, dim=1).cpu() if record_logits else None,
    )
