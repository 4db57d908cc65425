"""Prompt formatting and the classifier-free-guidance rows of the Janus text-to-image algorithm."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import JanusProcessor


def format_prompt(processor: JanusProcessor, prompt: str) -> str:
    """The conversation [user: prompt, assistant: ""] through the chat template, empty system prompt."""
    messages = [
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}]},
    ]
    return processor.apply_chat_template(messages, add_generation_prompt=False)


def encode_prompt(processor: JanusProcessor, prompt: str) -> list[int]:
    """Token ids of the formatted prompt: BOS ... <begin_of_image>."""
    text = format_prompt(processor, prompt)
    ids = processor(text=text, generation_mode="image", return_tensors="pt")["input_ids"][0]
    return ids.tolist()


def template_tokens(processor: JanusProcessor) -> int:
    """The tokens the chat template adds around a prompt (BOS ... <begin_of_image>)."""
    return len(encode_prompt(processor, ""))


def tokenizer_file(processor: JanusProcessor) -> str | None:
    """The model's tokenizer.json on this machine (a checkpoint directory, or the hub's cache), if there is one."""
    from huggingface_hub import try_to_load_from_cache

    name = str(getattr(processor.tokenizer, "name_or_path", "") or "")
    local = Path(name) / "tokenizer.json"
    if local.is_file():
        return str(local.resolve())
    try:
        cached = try_to_load_from_cache(name, "tokenizer.json") if name else None
    except ValueError:  # a name that is neither a directory nor a hub id
        return None
    return cached if isinstance(cached, str) else None


def unconditional_ids(ids: list[int], processor: JanusProcessor) -> list[int]:
    """The same ids with every token except BOS and <begin_of_image> replaced by the pad id."""
    tokenizer = processor.tokenizer
    keep = {tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(tokenizer.boi_token)}
    return [token if token in keep else tokenizer.pad_token_id for token in ids]


def guidance_rows(processor: JanusProcessor, prompt: str, negative: str | None = None) -> tuple[list[int], list[int]]:
    """A prompt's conditional and unconditional ids: the unconditional row is the negative prompt formatted as a
    prompt is, or without one (None or blank) the prompt's ids padded out."""
    cond = encode_prompt(processor, prompt)
    if negative is None or not negative.strip():
        return cond, unconditional_ids(cond, processor)
    return cond, encode_prompt(processor, negative)


def cfg_rows(processor: JanusProcessor, prompt: str, num_images: int) -> torch.Tensor:
    """Interleaved CFG batch for one prompt: row 2i conditional, row 2i+1 unconditional.  # [2n, L]"""
    cond = encode_prompt(processor, prompt)
    uncond = unconditional_ids(cond, processor)
    return torch.tensor([cond, uncond] * num_images, dtype=torch.long)


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt rows of different lengths as one batch: ids left-padded, and the mask of real tokens.  # [R, L]"""
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row)
        mask[i, length - len(row) :] = True
    return ids, mask
