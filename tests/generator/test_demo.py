"""The demo model: its scenes, the checker that scores it, and the shipped weights following prompts."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import asdict

import pytest
from PIL import Image

from generator.checkpoint import DEMO_MODEL_DIR, load_checkpoint, resolve_model
from generator.demo import checker, parser, phrasings, scenes
from generator.demo.evaluate import Evaluation, Scores, images_for, pairs, table
from generator.demo.train import (
    START,
    Budget,
    build_tokenizer,
    caption_rows,
    code_attributes,
    codes_follow,
    decision_tokens,
    identity_tokens,
    scene_codes,
    train,
)
from generator.describe import describe

# A few training-distribution prompts with fixed seeds; the shipped model must get their colours right.
FIXED = [
    (scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (0, 1)),)),
     "a large red circle at the top on a blue background"),
    (scenes.Scene("white", (scenes.Shape("green", "square", "large", (1, 1)),)),
     "a big green square in the center on a white background"),
    (scenes.Scene("black", (scenes.Shape("yellow", "triangle", "large", (2, 2)),)),
     "a large yellow triangle in the bottom right, black background"),
]


def test_checker_reads_rendered_ground_truth() -> None:
    for scene, _ in scenes.sample(300, seed=5) + scenes.held_out_scenes(60):
        result = checker.score(scene, scenes.render(scene))
        assert all(all(oks) for oks in result.values()), (scene, checker.read(scenes.render(scene)))


def test_checker_reads_sizes_and_scores_only_what_is_named() -> None:
    for scene, _ in scenes.sample(100, seed=5):
        assert sorted(b.size for b in checker.read(scenes.render(scene)).blobs) == sorted(s.size for s in scene.shapes)
    want = scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (0, 0)),))
    drawn = scenes.render(scenes.Scene("green", (scenes.Shape("red", "square", "small", (2, 2)),)))
    colour_only = scenes.Naming(False, (frozenset({"colour"}),))
    assert checker.right(want, drawn, colour_only)
    assert not checker.right(want, drawn, scenes.Naming(False, (frozenset({"colour", "size"}),)))
    assert not checker.right(want, drawn, scenes.Naming(True, (frozenset({"colour"}),)))
    assert checker.right(want, drawn, scenes.Naming(False, ()))  # names nothing: anything goes


def test_checker_reads_upscaled_pictures() -> None:
    scene, _ = FIXED[0]
    picture = scenes.render(scene).resize((192, 192), Image.Resampling.LANCZOS)
    assert all(all(oks) for oks in checker.score(scene, picture).values())


def test_checker_catches_each_kind_of_mistake() -> None:
    want = scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (0, 0)),))
    wrong = {
        "background": scenes.Scene("green", want.shapes),
        "colour": scenes.Scene("blue", (scenes.Shape("yellow", "circle", "large", (0, 0)),)),
        "kind": scenes.Scene("blue", (scenes.Shape("red", "triangle", "large", (0, 0)),)),
        "position": scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (2, 1)),)),
        "count": scenes.Scene("blue", want.shapes + (scenes.Shape("red", "circle", "large", (2, 2)),)),
    }
    for attribute, drawn in wrong.items():
        result = checker.score(want, scenes.render(drawn))
        failed = {name for name, oks in result.items() if not all(oks)}
        assert attribute in failed, (attribute, failed)
        assert "background" not in failed or attribute == "background"


def test_code_grids_name_what_each_cell_holds() -> None:
    for scene, _ in scenes.sample(200, seed=8):
        codes = scene_codes(scene)
        assert len(codes) == 36 and codes_follow(scene, codes)
        shaped = set()
        for shape in scene.shapes:
            top, left = 2 * shape.cell[0], 2 * shape.cell[1]  # a cell is 2x2 tokens
            quarters = [codes[(top + dy) * 6 + left + dx] for dy in (0, 1) for dx in (0, 1)]
            # A shape begins with one code for every shape; which shape it is comes next.
            assert quarters[0] == START
            assert [code_attributes(c) for c in quarters] == [("start",)] + [(shape.colour, shape.kind, q)
                                                                              for q in (1, 2, 3)]
            shaped |= {(top + dy) * 6 + left + dx for dy in (0, 1) for dx in (0, 1)}
        assert {code_attributes(c) for i, c in enumerate(codes) if i not in shaped} == {(scene.background,)}
    scene = FIXED[0][0]  # a large red circle at the top on blue
    codes = scene_codes(scene)
    small = scene_codes(scenes.Scene("blue", (scenes.Shape("red", "circle", "small", (0, 1)),)))
    moved = scene_codes(scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (2, 1)),)))
    green = scene_codes(scenes.Scene("blue", (scenes.Shape("green", "circle", "large", (0, 1)),)))
    assert codes_follow(scene, small) and small != codes  # size is in the codes but not part of the check
    assert not codes_follow(scene, moved) and not codes_follow(scene, green)
    assert not codes_follow(scene, [*codes[:-1], 255])  # an unused code is never right
    assert not codes_follow(scene, [*codes[:3], codes[3], codes[2], *codes[4:]])  # the right codes, out of place
    pair = scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (0, 0)),
                                 scenes.Shape("red", "circle", "large", (2, 2))), positioned=False)
    anywhere = scene_codes(scenes.Scene("blue", tuple(scenes.Shape("red", "circle", "large", c)
                                                    for c in ((1, 0), (1, 2)))))
    assert codes_follow(pair, anywhere)  # "two red circles": their cells are not asked for


def test_the_weighed_up_tokens_never_depend_on_their_own_value() -> None:
    """Weighing up a token because of its value (a shape's first token) would teach the model to begin shapes more
    often than its captions say; where it depends only on what came before, it leaves the probabilities alone."""
    for scene, _ in scenes.sample(100, seed=9):
        codes, marked, identity = scene_codes(scene), decision_tokens(scene), identity_tokens(scene)
        for t in range(36):
            row, col = divmod(t, 6)
            first_of_cell = row % 2 == 0 and col % 2 == 0
            after_start = any(codes[s] == START for s in {t - 1, t - 6, t - 7} & set(range(t)) if
                              (s // 6) // 2 == row // 2 and (s % 6) // 2 == col // 2)
            assert marked[t] == (first_of_cell or after_start), (scene, t)
            assert identity[t] == (col % 2 == 1 and codes[t - 1] == START), (scene, t)  # the token after a START
        assert sum(identity) == len(scene.shapes)


def test_training_rows_drop_or_swap_captions_in_the_budgeted_shares() -> None:
    captions = [[f"scene {i} says {j}" for j in range(4)] for i in range(50)]
    index = [i % 50 for i in range(6000)]
    rows = caption_rows(random.Random(0), captions, index, Budget(uncond=0.1, mismatch=0.25))
    dropped = [i for i, (caption, _) in zip(index, rows) if caption is None]
    swapped = [(i, c) for i, (c, _) in zip(index, rows) if c is not None and c != i]
    assert 0.08 < len(dropped) / len(rows) < 0.12
    assert 0.22 < len(swapped) / (len(rows) - len(dropped)) < 0.28
    assert len({c for _, c in swapped}) == 50  # any other scene's caption, never the row's own
    assert all(text in captions[i if c is None else c] for i, (c, text) in zip(index, rows))
    assert len({text for _, text in rows}) == 200  # each of a scene's captions is used
    honest = caption_rows(random.Random(0), captions, index, Budget(uncond=0.1, mismatch=0.0))
    assert all(c in (None, i) for i, (c, _) in zip(index, honest))


def test_train_demo_recipe_saves_a_checkpoint_the_engine_runs(tmp_path) -> None:
    tiny = Budget(vq_steps=4, vq_batch=4, encoder_steps=4, scenes=40, lm_steps=4, lm_batch=4, mismatch=0.2,
                  describe_batch=3, decoded=8, tune_steps=3, tune_scenes=30, tune_decoded=4)
    lines: list[str] = []
    stats = train(tmp_path, seed=1, threads=1, budget=tiny, report=lines.append)
    assert stats["budget"] == asdict(tiny)
    assert set(stats["lm"]) >= {"loss", "token_accuracy", "decision_accuracy", "describe_loss",
                                "describe_token_accuracy"}
    assert any(line.startswith("lm step 4/4: loss") and "describe loss" in line for line in lines), lines
    assert set(stats["tune"]) == set(stats["lm"]) and any(line.startswith("stage 3: 3 more steps") for line in lines)
    assert any(line.startswith("lm step 3/3: loss") for line in lines), lines  # stage 3's own steps
    assert json.loads((tmp_path / "training.json").read_text())["seed"] == 1
    checkpoint = load_checkpoint(str(tmp_path), device="cpu")
    (pictures,) = images_for(checkpoint, [FIXED[0][1]], num_images=2, cfg=5.0, seed=0)
    assert [p.size for p in pictures] == [(scenes.IMAGE_SIZE, scenes.IMAGE_SIZE)] * 2
    (answer,) = describe(checkpoint, pictures[:1], max_new_tokens=4)
    assert len(answer.tokens[0]) <= 4 and isinstance(answer.prompts[0], str)


def test_scenes_are_deterministic_by_seed() -> None:
    first, again, other = scenes.sample(50, seed=3), scenes.sample(50, seed=3), scenes.sample(50, seed=4)
    assert first == again
    assert first != other
    assert [scenes.render(s).tobytes() for s, _ in first[:5]] == [scenes.render(s).tobytes() for s, _ in again[:5]]
    assert scenes.held_out_scenes(12) == scenes.held_out_scenes(12)


def test_training_leans_on_two_shapes_and_eval_keeps_its_mix() -> None:
    def shares(drawn: list[scenes.Scene]) -> list[float]:
        kinds = ["count" if not s.positioned else len(s.shapes) for s in drawn]
        return [kinds.count(k) / len(kinds) for k in (1, 2, "count")]

    train = shares([scene for scene, _ in scenes.sample(6000, seed=1)])
    assert train[0] < 0.42 and train[1] > 0.35 and train[2] > 0.16  # held-out scenes left out: more of them pairs
    rng = random.Random(1)
    prompts = shares([scenes.random_scene(rng) for _ in range(6000)])  # phrasing's prompts: half one shape
    assert abs(prompts[0] - 0.5) < 0.03 and abs(prompts[1] / prompts[2] - 1.5) < 0.2


def test_neighbouring_pairs_sit_side_by_side() -> None:
    pairs = scenes.sample(300, seed=6, neighbours=True)
    for scene, _ in pairs:
        (top, left), (bottom, right) = (shape.cell for shape in scene.shapes)
        assert abs(top - bottom) + abs(left - right) == 1, scene
    assert {scene.positioned for scene, _ in pairs} == {True, False}  # two different shapes, and two alike
    assert scenes.sample(40, seed=6, neighbours=True) == pairs[:40]


def test_held_out_combinations_never_reach_training() -> None:
    train = scenes.sample(3000, seed=0)
    assert not any(scenes.is_held_out(scene) for scene, _ in train + scenes.sample(1000, seed=0, neighbours=True))
    assert all(scenes.is_held_out(scene) for scene, _ in scenes.held_out_scenes(40))
    # Every part of a held-out combination is still seen: (colour, kind) pairs, kinds and colours at each cell.
    seen = {(s.colour, s.kind) for scene, _ in train for s in scene.shapes}
    assert len(seen) == len(scenes.COLOURS) * len(scenes.KINDS)
    assert {(s.kind, s.cell) for scene, _ in train for s in scene.shapes} == {
        (k, divmod(c, 3)) for k in scenes.KINDS for c in range(9)}


def test_captions_vary_and_say_what_their_naming_names() -> None:
    rng = random.Random(0)
    scene = FIXED[0][0]
    texts = {scenes.caption(scene, rng) for _ in range(200)}
    assert len(texts) > 100
    linked = scenes.sample_captions(5000, seed=7, linked=True)
    for c in scenes.sample_captions(5000, seed=7) + linked + scenes.held_out_captions(100):
        assert parser.agrees(parser.parse(c.text), c.scene, c.naming), c
    # Stage 3's captions take the linked frames too, and words between two shapes; the others never do.
    leads = [f", {lead} " for lead in scenes.LEADS] + [f" and {lead} " for lead in scenes.LEADS]
    assert 0.03 < sum(any(w in c.text for w in leads) for c in linked) / len(linked) < 0.2
    assert not any(any(w in c.text for w in leads) for c in scenes.sample_captions(5000, seed=7))


def test_captions_name_all_or_part_of_a_scene_and_leave_the_rest_to_chance() -> None:
    drawn = scenes.sample_captions(30000, seed=3)
    namings = [c.naming for c in drawn]
    assert 0.12 < sum(n.background and all(n2 >= {"colour", "kind", "position"} for n2 in n.shapes) and
                     bool(n.shapes) and not n.together for n in namings) / len(namings) < 0.5
    assert any(not n.shapes for n in namings)  # only the background
    assert any(n.together and not n.shapes[0] for n in namings)  # "two shapes"
    assert any(not n.background and n.shapes == (frozenset({"kind"}),) for n in namings)  # "a circle"
    # What "a <kind>"-only captions leave open is spread over its values in the training scenes.
    open_kind = [c.scene for c in drawn if not c.naming.background and c.naming.shapes == (frozenset({"kind"}),)]
    assert len({s.background for s in open_kind}) == 8 and len({s.shapes[0].cell for s in open_kind}) == 9
    texts = [c.text for c in drawn]
    assert any(t[0].isupper() for t in texts) and any(t.endswith(".") for t in texts)
    assert any(word in t for t in texts for word in scenes.STYLE)  # words that say nothing about the picture


def test_full_captions_name_every_attribute_in_canonical_words() -> None:
    rng = random.Random(2)
    for scene, _ in scenes.sample(500, seed=4):
        text = scenes.full_caption(scene, rng)
        got = parser.as_scene(parser.parse(text))
        assert got is not None and got.background == scene.background, text
        assert sorted(got.shapes, key=lambda s: s.cell) == sorted(scene.shapes, key=lambda s: s.cell), text
        assert not set(parser.words(text)) - set(parser.words(" ".join(
            [*scenes.COLOURS, *scenes.KINDS, *scenes.SIZES, *scenes.POSITION_NAMES.values(), *scenes.FRAMES_FULL,
             "a an and in at on"]))), text


def test_no_eval_phrasing_is_a_training_template() -> None:
    def norm(text: str) -> str:
        return " ".join(parser.words(text))

    linked = {f.format(things="{things}", bg="{bg}", a_bg="{a_bg}", lead=lead, setting=setting)
              for f in scenes.FRAMES_LINKED for lead in scenes.LEADS for setting in scenes.SETTINGS}
    training = {norm(f) for f in scenes.FRAMES_BOTH + scenes.FRAMES_THINGS + scenes.FRAMES_BACKGROUND + [*linked]}
    with_words = training | {norm(f"{p} {f}") for p in scenes.PREFIXES for f in training} | {
        norm(f"{f}, {s}") for s in scenes.STYLE for f in training}
    held_out = [norm(f) for frames in phrasings.FRAMES.values() for f in frames]
    assert len(held_out) == len(set(held_out)) >= 15
    assert not set(held_out) & with_words
    # Nor does any eval prompt come out of the training captions (punctuation and capitals aside).
    seen = {norm(c.text) for c in scenes.sample_captions(60000, seed=0) + scenes.sample_captions(30000, 1, linked=True)}
    prompts = phrasings.phrasing_prompts(128) + phrasings.variety_prompts()
    assert not {norm(c.text) for c in prompts} & seen
    assert all(parser.agrees(parser.parse(c.text), c.scene, c.naming) for c in prompts)  # they say what they mean


def test_variety_prompts_name_one_or_two_attributes_and_leave_the_rest_open() -> None:
    prompts = phrasings.variety_prompts()
    named = [int(c.naming.background) + sum(map(len, c.naming.shapes[:1])) + (len(c.naming.shapes) == 2)
             for c in prompts]
    assert named.count(1) >= 12 and set(named) == {1, 2}
    assert all(len(c.naming.open(c.scene)) >= 3 for c in prompts)


def test_the_tokenizer_has_the_demo_words_whole() -> None:
    tokenizer = build_tokenizer()
    for word in [*scenes.COLOURS, *scenes.KINDS, "background", "small", "large", "left", "right", "top"]:
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    assert tokenizer.decode(tokenizer("Show me a lighthouse?")["input_ids"], skip_special_tokens=True) == (
        "Show me a lighthouse?")  # any text encodes


def test_the_shipped_model_has_the_tokenizer_the_recipe_builds(demo) -> None:
    """The tokenizer is learned from stage 2's captions: a change to them is a change of recipe, which ships only
    with the model it trains."""
    assert demo.processor.tokenizer.get_vocab() == build_tokenizer().get_vocab()


def test_no_model_means_the_shipped_demo_model() -> None:
    assert resolve_model(None) == str(DEMO_MODEL_DIR)
    assert (DEMO_MODEL_DIR / "README.md").is_file()
    assert sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()) < 20 * 2**20


@pytest.fixture(scope="module")
def demo():
    return load_checkpoint(resolve_model(None), device="cpu")


def test_shipped_model_paints_the_asked_colours_and_shapes(demo) -> None:
    assert demo.image_size == scenes.IMAGE_SIZE and demo.num_image_tokens == 36
    images = images_for(demo, [text for _, text in FIXED], num_images=4, cfg=5.0, seed=11)
    for (scene, text), pictures in zip(FIXED, images):
        results = [checker.score(scene, p) for p in pictures]
        readings = [checker.read(p) for p in pictures]
        assert all(all(r["background"]) and all(r["colour"]) for r in results), (text, readings)
        assert sum(all(all(oks) for oks in r.values()) for r in results) >= 3, (text, readings)


def test_eval_demo_prints_every_section_the_targets_and_the_overall_line_last() -> None:
    run = subprocess.run([sys.executable, "-m", "janus_bot", "eval-demo", "--n", "3", "--images", "1"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    for name in (*checker.ATTRIBUTES, "all correct", "codes right"):
        assert re.search(rf"^{name}\s+\d\.\d\d\s+\d\.\d\d", run.stdout, re.M), name
    for pattern in (r"guidance gain: [+-]\d\.\d\d all correct, 95% interval [+-](\d\.\d\d|inf) to [+-](\d\.\d\d|inf) "
                    r"\(over 3 prompts\)",
                    r"decoder alone: \d\.\d\d of the true code grids drawn with every check passing",
                    r"phrasing: 3 prompts in held-out phrasings x 1 images at cfg 5: \d\.\d\d with every named .*",
                    r"variety at cfg 1: 8 seeds each; naming one attribute \d\.\d different pictures .*",
                    r"variety at cfg 5: .*",
                    r"describe: 3 held-out scenes, every attribute right in \d\.\d\d of the answers .*",
                    r"pairs: 1 held-out scenes of two different shapes named by colour and kind x 1 images at cfg 5: "
                    r"\d\.\d\d right with their places named, \d\.\d\d without \(e\.g\. 'an orange triangle and a "
                    r"blue triangle on a green background': .*\)"):
        assert any(re.fullmatch(pattern, line) for line in lines), pattern
    assert re.fullmatch(r"targets: phrasing >= 0\.85: (met|NOT met); variety >= 6 of 8 for every prompt naming one "
                        r"attribute: (met|NOT met); describe >= 0\.90: (met|NOT met); combination >= 0\.85 at cfg 5 "
                        r"and above cfg 1: (met|NOT met)", lines[-2])
    assert re.fullmatch(r"overall: \d\.\d\d at cfg 5, \d\.\d\d at cfg 1", lines[-1])


def test_guidance_gain_is_paired_over_prompts() -> None:
    def scores(cfg: float, per_prompt: list[float]) -> Scores:
        return Scores(cfg, dict.fromkeys(checker.ATTRIBUTES, 1.0), 4 * len(per_prompt), 0.0, per_prompt)

    # Every prompt gains a quarter: the gap is certain however spread the prompts' own scores are.
    steady = Evaluation([scores(1, [0.0, 0.5, 0.75, 0.25]), scores(5, [0.25, 0.75, 1.0, 0.5])], decoder=1.0)
    assert steady.gap() == pytest.approx((0.25, 0.0))
    # The same mean gain from two prompts that moved a lot, in opposite directions: a wide interval.
    mixed = Evaluation([scores(1, [0.0, 1.0, 0.0, 0.0]), scores(5, [1.0, 0.0, 0.0, 0.0])], decoder=1.0)
    gap, half = mixed.gap()
    assert gap == 0.0 and half == pytest.approx(1.96 * (2 / 3) ** 0.5 / 2)
    assert "guidance gain: +0.25 all correct, 95% interval +0.25 to +0.25 (over 4 prompts)" in table(steady)


def test_eval_demo_refuses_bad_options_in_one_line() -> None:
    run = subprocess.run([sys.executable, "-m", "janus_bot", "eval-demo", "--n", "0"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["janus-bot: error: --n must be at least 1; you gave 0."]


def test_regenerating_the_bottom_half_keeps_the_top_and_varies_the_bottom(demo) -> None:
    import numpy as np
    import torch

    from generator.codec import decode_tokens, encode_pictures, region_cells
    from generator.engine import Request, generate

    def mean_abs(pictures: list[Image.Image], reference: Image.Image, rows: slice) -> float:
        ref = np.asarray(reference, dtype=np.float32)[rows]
        return float(np.mean([np.abs(np.asarray(p, dtype=np.float32)[rows] - ref).mean() for p in pictures]))

    original = scenes.render(scenes.Scene("blue", (scenes.Shape("red", "circle", "large", (0, 1)),)))
    codes = encode_pictures(demo, [original])[0]
    round_trip = decode_tokens(demo, codes[None])[0]
    keep = ~region_cells(demo.grid_size, (0.0, 0.5, 1.0, 1.0))
    text, top, bottom = "two red circles on a blue background", slice(0, 24), slice(24, 48)
    kept = generate(demo, [Request(text, 2, cfg=2.0, seed=s, forced=codes, keep=keep) for s in range(4)])
    free = generate(demo, [Request(text, 2, cfg=2.0, seed=s) for s in range(4)])
    pictures = decode_tokens(demo, torch.cat([r.tokens for r in kept]))
    # Of 255, measured (docs/benchmarks.md): the top half 3.6 from the VQ round trip (the decoder reads every code,
    # so new bottom codes move the top's pixels a little), 6.0 from the original (the round trip alone is 5.5 away);
    # a picture made from the same prompt without the kept cells is 17.3 away.
    assert mean_abs(pictures, round_trip, top) < 6
    assert mean_abs(pictures, original, top) < 8
    assert mean_abs(decode_tokens(demo, torch.cat([r.tokens for r in free])), original, top) > 12
    bottoms = {tuple(tokens[18:].tolist()) for r in kept for tokens in r.tokens}
    assert len(bottoms) >= 2  # seeds change the bottom (measured: 3 different bottoms of 8)
    spread = max(mean_abs(pictures[i + 1 :], p, bottom) for i, p in enumerate(pictures[:-1]))
    assert spread > 10


def test_shipped_model_varies_what_a_prompt_leaves_open(demo) -> None:
    # Each prompt names one attribute; the engine draws each seed's picture with its own random numbers.
    for text in ("a red circle", "a blue background", "a triangle"):
        scene, naming = parser.named(parser.parse(text))
        (pictures,) = images_for(demo, [text], num_images=8, cfg=5.0, seed=3)
        assert len({p.tobytes() for p in pictures}) >= 6, text
        assert sum(checker.right(scene, p, naming) for p in pictures) >= 6, (text, [checker.read(p) for p in pictures])


def test_pairs_scores_two_different_shapes_with_and_without_their_places(demo) -> None:
    cases = scenes.held_out_captions(12, seed=1)  # every fourth a pair; counts and single shapes are left out
    two = [c for c in cases if c.scene.positioned and len({(s.colour, s.kind) for s in c.scene.shapes}) == 2]
    result = pairs(demo, cases, num_images=2, cfg=5.0)
    assert result is not None and two
    for scored in (result.placed, result.open):
        assert len(scored.per_prompt) == len(two) and scored.images == 2 * len(two)
    assert "position" in result.placed.attributes and "position" not in result.open.attributes
    assert {"colour", "kind", "background", "count"} <= set(result.open.attributes)
    example = parser.parse(result.example)
    assert len(example.shapes) == 2 and all(shape.cell is None for shape in example.shapes), result.example
    assert pairs(demo, [c for c in cases if c not in two], num_images=1, cfg=5.0) is None


def test_shipped_model_describes_held_out_pictures_as_prompts_that_redraw_them(demo) -> None:
    cases = scenes.held_out_scenes(6, seed=5)  # combinations neither direction of training saw
    answers = [a.prompts[0] for a in describe(demo, [scenes.render(scene) for scene, _ in cases], temperature=0.0)]
    right = [parser.agrees(parser.parse(answer), scene, scenes.Naming.every(scene))
             for answer, (scene, _) in zip(answers, cases)]
    assert sum(right) >= 5, answers
    (redrawn,) = images_for(demo, [answers[right.index(True)]], num_images=4, cfg=5.0, seed=2)
    scene = cases[right.index(True)][0]
    assert sum(checker.right(scene, picture) for picture in redrawn) >= 3, answers[right.index(True)]
