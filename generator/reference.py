"""The published text-to-image loop, written plainly from design.md section 3: one prompt at a time.

The engine must match it (greedy tokens, teacher-forced guided logits); the benchmark measures against it.
With a negative prompt, the conditional and the negative rows run each on their own (no padding, each from
position 0); with forced cells, those cells are fed the given codes instead of the sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generator.checkpoint import Checkpoint
from generator.prompt import cfg_rows, encode_prompt


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
    negative: str | None = None,
    forced: torch.Tensor | None = None,  # [n, num_image_tokens]: teacher forcing
    keep: torch.Tensor | None = None,  # [n, num_image_tokens] bool: the cells `forced` gives (default: all)
    record_logits: bool = False,
) -> ReferenceOutput:
    """Interleaved cond/uncond rows, a growing KV cache, softmax sampling (argmax at temperature 0)."""
    model, device, processor = checkpoint.model, checkpoint.device, checkpoint.processor
    if negative is None:
        batches = [cfg_rows(processor, prompt, num_images)]  # [2n, L], rows 2i and 2i + 1
    else:  # [n, L_cond] and [n, L_neg]
        batches = [torch.tensor([encode_prompt(processor, text)] * num_images) for text in (prompt, negative)]
    embeds = [model.get_input_embeddings()(ids.to(device)) for ids in batches]
    caches: list[object] = [None] * len(batches)
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens, logits_seen = [], []
    for step in range(checkpoint.num_image_tokens):
        logits = []
        for i in range(len(batches)):
            out = model.model.language_model(inputs_embeds=embeds[i], cache=caches[i], use_cache=True)
            caches[i] = out.cache
            logits.append(model.model.generation_head(out.last_hidden_state[:, -1]).float())
        cond, uncond = (logits[0][0::2], logits[0][1::2]) if negative is None else logits
        guided = uncond + cfg * (cond - uncond)
        if temperature == 0:
            token = guided.argmax(dim=-1)
        else:
            probs = torch.softmax(guided / temperature, dim=-1)
            token = torch.multinomial(probs, num_samples=1, generator=generator)[:, 0]
        if forced is not None:
            given = forced[:, step].to(device)
            token = given if keep is None else torch.where(keep[:, step].to(device), given, token)
        tokens.append(token)
        if record_logits:
            logits_seen.append(guided)
        if negative is None:
            pair = torch.stack([token, token], dim=1).view(-1, 1)  # [2n, 1]
            embeds = [model.prepare_embeddings_for_image_generation(pair)]
        else:
            embeds = [model.prepare_embeddings_for_image_generation(token[:, None])] * 2  # [n, 1, H] each
    return ReferenceOutput(
        tokens=torch.stack(tokens, dim=1).cpu(),
        logits=torch.stack(logits_seen, dim=1).cpu() if record_logits else None,
    )
