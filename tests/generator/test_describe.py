"""Describe: pictures to prompts through transformers' own understanding path, several pictures in one call."""

from __future__ import annotations

import copy

import torch
from PIL import Image

from generator.describe import DEFAULT_INSTRUCTION, clean, describe, describe_prompt


def _pictures() -> list[Image.Image]:
    red = Image.new("RGB", (96, 96), (220, 40, 40))
    red.paste((40, 90, 220), (20, 20, 60, 60))
    return [red, Image.new("RGB", (150, 100), (245, 215, 40))]  # the second is not square nor the model's size


def test_greedy_prompts_are_transformers_generate_token_for_token(tiny) -> None:
    pictures = _pictures()
    got = describe(tiny, pictures, count=2, temperature=0, max_new_tokens=12)
    text = describe_prompt(tiny.processor)
    inputs = tiny.processor(text=[text, text], images=pictures, return_tensors="pt")
    with torch.inference_mode():
        plain = tiny.model.generate(**inputs, max_new_tokens=12, do_sample=False)
    eos = tiny.processor.tokenizer.eos_token_id
    for description, row in zip(got, plain[:, inputs["input_ids"].shape[1]:].tolist()):
        ids = row[: row.index(eos) + 1] if eos in row else row
        assert description.tokens == [ids, ids]  # greedy: every row the same
        assert description.prompts == [clean(tiny.processor.decode(ids, skip_special_tokens=True),
                                             finished=eos in row)] * 2
    alone = [describe(tiny, [picture], temperature=0, max_new_tokens=12)[0].tokens[0] for picture in pictures]
    assert alone == [d.tokens[0] for d in got]  # what shared the call does not matter


def test_the_picture_comes_before_the_instruction_in_one_user_turn(tiny) -> None:
    text = describe_prompt(tiny.processor, "Say what you see.")
    image = tiny.processor.image_token
    assert text.index(image) < text.index("Say what you see.")
    assert text.count(image) == 1 and text.startswith("<|User|>: ") and text.endswith("<|Assistant|>:")
    assert describe_prompt(tiny.processor).count(DEFAULT_INSTRUCTION) == 1


def test_a_template_that_keeps_only_text_gets_the_picture_in_the_text(tiny) -> None:
    processor = copy.copy(tiny.processor)
    processor.chat_template = (  # renders only a turn's text items, as some conversions' templates do
        "{% for message in messages %}<|User|>: {{ message['content'] if message['content'] is string else "
        "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}\n\n"
        "{% endfor %}{% if add_generation_prompt %}<|Assistant|>:{% endif %}")
    text = describe_prompt(processor, "Say what you see.")
    assert text == f"<|User|>: {processor.image_token}\nSay what you see.\n\n<|Assistant|>:"
    assert text == describe_prompt(tiny.processor, "Say what you see.")  # the Janus template renders it alike


def test_sampled_rows_are_seeded_per_picture_and_row(tiny) -> None:
    red, yellow = _pictures()
    both = describe(tiny, [red, yellow], count=3, temperature=1.0, seed=5, max_new_tokens=8)
    again = describe(tiny, [red, yellow], count=3, temperature=1.0, seed=5, max_new_tokens=8)
    alone = describe(tiny, [yellow], count=3, temperature=1.0, seed=6, max_new_tokens=8)
    assert both == again
    assert alone[0] == both[1]  # picture 1 of seed 5 is seed 6: what shared the call does not matter
    assert len({tuple(row) for row in both[0].tokens}) > 1  # rows differ
    assert describe(tiny, [red], count=3, temperature=1.0, seed=7, max_new_tokens=8)[0] != both[0]


def test_jobs_of_one_call_each_keep_their_own_seed(tiny) -> None:
    red, yellow = _pictures()
    both = describe(tiny, [red, yellow], count=2, temperature=1.0, seed=[11, 3], max_new_tokens=6)
    assert both == [describe(tiny, [red], count=2, temperature=1.0, seed=11, max_new_tokens=6)[0],
                    describe(tiny, [yellow], count=2, temperature=1.0, seed=3, max_new_tokens=6)[0]]


def test_shown_prompts_are_cleaned_and_cut_at_a_sentence_end() -> None:
    assert clean("  a red\tcircle\n\non blue\x07 ") == "a red circle on blue"
    assert clean("a red circle\u200b on blue. And then a", finished=False) == "a red circle on blue."
    assert clean("a red circle on blue. And then a", finished=True) == "a red circle on blue. And then a"
    assert clean("no sentence end here", finished=False) == "no sentence end here"
    assert clean("v1.5 is out! next", finished=False) == "v1.5 is out!"
