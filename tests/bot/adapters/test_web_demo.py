"""The page's example prompts for the built-in demo model: words of its training captions, combinations it was
trained on, and pictures the demo model draws right."""

from __future__ import annotations

import pytest

from bot.adapters.web.about import DEMO_DRAWS, demo_examples
from generator.demo import scenes
from generator.demo.scenes import Scene, Shape

# What each example asks for; a scene's size is not checked by the checker, and "two ..." names no places.
MEANT = {
    "a large red circle at the top on a blue background": Scene("blue", (Shape("red", "circle", "large", (0, 1)),)),
    "two small yellow squares on a purple background": Scene(
        "purple", (Shape("yellow", "square", "small", (0, 0)), Shape("yellow", "square", "small", (2, 2))),
        positioned=False,
    ),
    "a green triangle in the bottom left on a white background": Scene(
        "white", (Shape("green", "triangle", "small", (2, 0)),)
    ),
    "a black background with a big orange square in the center": Scene(
        "black", (Shape("orange", "square", "large", (1, 1)),)
    ),
    "a red square in the top left and a yellow circle in the bottom right on a blue background": Scene(
        "blue", (Shape("red", "square", "small", (0, 0)), Shape("yellow", "circle", "small", (2, 2)))
    ),
}  # fmt: skip


def test_every_example_is_meant_and_in_the_demo_models_words() -> None:
    assert list(MEANT) == demo_examples()
    trained = {word for _, caption in scenes.sample(5000, seed=0) for word in caption.replace(",", "").split()}
    for example in demo_examples():
        assert set(example.split()) <= trained, example


def test_no_example_is_a_combination_training_held_out() -> None:
    for example, scene in MEANT.items():
        held_out = scene.positioned and scenes.is_held_out(scene)
        pair = not scene.positioned and scenes.held_out_pair(scene.shapes[0].colour, scene.shapes[0].kind)
        assert not held_out and not pair, example


def test_the_description_names_the_demo_models_whole_vocabulary() -> None:
    places = [name.removeprefix("the ") for name in scenes.POSITION_NAMES.values()]  # "top left", "top", ...
    assert len(places) == 9
    for word in [*scenes.COLOURS, "circles", "squares", "triangles", "small", "large", *places]:
        assert word in DEMO_DRAWS, word


@pytest.mark.slow
def test_the_demo_model_draws_the_examples() -> None:
    from generator.checkpoint import DEMO_MODEL_DIR, load_checkpoint
    from generator.demo import checker
    from generator.demo.evaluate import images_for

    checkpoint = load_checkpoint(DEMO_MODEL_DIR, device="cpu")
    pictures = images_for(checkpoint, demo_examples(), num_images=4, cfg=5.0, seed=0)
    for (example, scene), drawn in zip(MEANT.items(), pictures):
        right = [checker.right(scene, picture) for picture in drawn]
        assert sum(right) >= 3, (example, right)
