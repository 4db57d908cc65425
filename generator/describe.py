"""Pictures to prompts with the model's own understanding path (design.md §3, "Describe").

One user turn holding the picture and then the instruction, through the processor's chat template with the
generation prompt; `JanusProcessor(text=..., images=...)` and transformers' text generation, special tokens skipped.
Several pictures and their rows go through one `generate` call. A sampled row draws from its own random stream
(`sampling.image_key(seed + picture index, row)`, step by step), so its prompt never depends on what else shared
the call; temperature 0 is greedy, the plain `model.generate` call.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import GenerationMixin, JanusProcessor, LogitsProcessor, LogitsProcessorList

from generator.checkpoint import Checkpoint
from generator.sampling import image_key, sample, uniform

DEFAULT_INSTRUCTION = "Write a prompt for an image generator that would produce this picture."
MAX_NEW_TOKENS = 64
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class Description:
    """One picture's prompts, cleaned to show, and the token ids each was generated as (through its end token)."""

    prompts: list[str]
    tokens: list[list[int]]


def describe_prompt(processor: JanusProcessor, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The text of one user turn holding a picture and then the instruction, with the generation prompt.

    A chat template that renders the picture (the published checkpoints' does) gets the turn as content items; one
    that keeps only text items gets the picture's placeholder in the text, as DeepSeek's own Janus code writes it.
    """
    image = processor.image_token
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = processor.apply_chat_template(turn, add_generation_prompt=True)
    if text.count(image) != 1:
        turn = [{"role": "user", "content": f"{image}\n{instruction}"}]
        text = processor.apply_chat_template(turn, add_generation_prompt=True)
    if text.count(image) != 1:
        raise ValueError("This model's chat template does not place a picture in a user turn.")
    return text


def clean(text: str, *, finished: bool = True) -> str:
    """A generated prompt as people should see it: control characters out, whitespace collapsed, and, when the
    token limit cut it short, cut back to its last sentence end (when it has one)."""
    text = "".join(" " if ch.isspace() else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    text = " ".join(text.split())
    if not finished:
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        if ends:
            text = text[: ends[-1]]
    return text


class _RowSampler(LogitsProcessor):
    """Draws each row's next token from softmax(logits / T) with that row's own counter-based random numbers and
    leaves only it: the greedy step then takes it. `keys` [B] name the rows' streams; the step is the number of
    tokens generated so far."""

    def __init__(self, keys: torch.Tensor, temperature: float, prompt_length: int) -> None:
        self.keys = keys
        self.temperature = temperature
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        steps = torch.full_like(self.keys, input_ids.shape[1] - self.prompt_length)
        temperature = torch.full((len(scores),), self.temperature, device=scores.device)
        drawn = sample(scores.float(), temperature, uniform(self.keys, steps).to(scores.device))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn[:, None], 0.0)


@torch.inference_mode()
def describe(checkpoint: Checkpoint, pictures: Sequence[Image.Image], *, count: int = 1, temperature: float = 0.7,
             seed: int | Sequence[int] = 0, instruction: str = DEFAULT_INSTRUCTION,
             max_new_tokens: int = MAX_NEW_TOKENS) -> list[Description]:
    """`count` prompts for each picture (RGB), all in one generate call; picture i uses seed + i (or seed[i]:
    several jobs in one call), its row r the random stream (seed + i, r). Temperature 0 is greedy: every row the
    same."""
    if not pictures:
        return []
    seeds = [seed + i for i in range(len(pictures))] if isinstance(seed, int) else list(seed)
    if len(seeds) != len(pictures):
        raise ValueError(f"{len(seeds)} seeds for {len(pictures)} pictures")
    model, processor = checkpoint.model, checkpoint.processor
    rows = count if temperature > 0 else 1
    text = describe_prompt(processor, instruction)
    inputs = processor(text=[text] * (len(pictures) * rows), images=[p for p in pictures for _ in range(rows)],
                       return_tensors="pt").to(checkpoint.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(checkpoint.dtype)
    length = inputs["input_ids"].shape[1]
    if temperature > 0:
        keys = torch.tensor([image_key(s, r) for s in seeds for r in range(rows)], device=checkpoint.device)
        # JanusForConditionalGeneration.generate hands text generation to GenerationMixin.generate but drops a
        # logits processor on the way: call that directly, as Janus's own text branch does.
        out = GenerationMixin.generate(model, **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                       guidance_scale=None,
                                       logits_processor=LogitsProcessorList([_RowSampler(keys, temperature, length)]))
    else:
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    eos = processor.tokenizer.eos_token_id
    results = []
    for i in range(len(pictures)):
        prompts, tokens = [], []
        for row in out[i * rows: (i + 1) * rows, length:].tolist():
            finished = eos in row
            ids = row[: row.index(eos) + 1] if finished else row
            prompts.append(clean(processor.decode(ids, skip_special_tokens=True), finished=finished))
            tokens.append(ids)
        results.append(Description(prompts * (count // rows), tokens * (count // rows)))
    return results
