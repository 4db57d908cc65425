"""The demo model's card (README.md next to the weights): what it is and knows, data, sizes, training, scores."""

from __future__ import annotations

import json
from pathlib import Path

from generator.checkpoint import load_checkpoint
from generator.demo import EXAMPLES, phrasings, scenes
from generator.demo.evaluate import DESCRIBE_TEMPERATURE, PHRASINGS, PROMPTS, SEEDS, TARGETS, evaluate, table
from generator.demo.train import DEMO, IN_USE
from generator.describe import DEFAULT_INSTRUCTION


def write_card(model_dir: str | Path, stats: dict[str, object] | None = None) -> list[str]:
    """Score the saved model exactly as eval-demo does and write its card; returns the score table."""
    model_dir = Path(model_dir)
    if stats is None:
        stats = json.loads((model_dir / "training.json").read_text())
    checkpoint = load_checkpoint(model_dir, device="cpu")
    evaluation = evaluate(checkpoint)
    lines = table(evaluation)
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    targets = evaluation.targets()
    verdict = {name: "met" if ok else "**NOT met**" for name, ok in targets.items()}
    seconds = stats["seconds"]
    budget = stats["budget"]
    tune = stats["tune"]
    places = ", ".join(name.removeprefix("the ") for name in scenes.POSITION_NAMES.values())
    examples = "\n".join(f"    {example}" for example in EXAMPLES)
    frames = len(scenes.FRAMES_BOTH) + len(scenes.FRAMES_THINGS) + len(scenes.FRAMES_BACKGROUND)
    linked = len(scenes.FRAMES_LINKED)
    provenance = f" ({stats['sittings']})" if stats.get("sittings") else ""  # a run resumed on another machine
    text = f"""# janus-bot demo model

**This is a demo, not an image model.** It draws flat coloured shapes on a plain background and nothing else:
a tiny model of the real Janus architecture (`JanusForConditionalGeneration`: Llama language model, VQ-VAE,
generation embeddings, aligner and head, vision encoder) trained from scratch on CPU on synthetic scenes, so a
fresh install draws pictures that follow the prompt, varies what the prompt leaves open, and describes pictures.
For real pictures set a Janus checkpoint (`deepseek-community/Janus-Pro-1B` or `-7B`). Built by `janus-bot
train-demo OUT_DIR --seed {stats["seed"]}` (`generator/demo/`); loads like any checkpoint with
`JanusForConditionalGeneration` and `JanusProcessor`.

## What it knows

- Backgrounds: one plain colour of {", ".join(scenes.COLOURS)}.
- Shapes: one or two of circle (also "disc", "round dot"), square ("box") and triangle, in the same eight colours
  (never the background's), small ("tiny", "little") or large ("big").
- Positions: the nine cells of a 3x3 grid: {places}.
- Counts: one shape, or two ("two red circles", "a pair of squares", or each named: "a red circle at the top
  and a blue square on the left").
- Any of these may be left out ("a red circle", "two squares", "a blue background"): what a prompt leaves
  open is drawn at random, so each seed gives another picture. Other words ("please", "digital art") are
  ignored; a prompt about anything else ("a lighthouse at dusk") gives random shapes.
- Describe: given a picture it answers `{DEFAULT_INSTRUCTION}` with a
  caption naming every attribute ("a small red circle in the top left on a blue background").

Prompts it draws:

{examples}

## Data

Pictures of {scenes.IMAGE_SIZE}x{scenes.IMAGE_SIZE} px: a background colour and one or two shapes, each centred in
one cell of the 3x3 grid (2x2 VQ tokens per cell). A third of the training scenes hold one shape, the rest two
different shapes or two alike, 3:2 (eval-demo's prompts: half one shape). Each caption names all or part of its
scene: the background (three captions in four), each shape's colour and kind (85%), size (under half) and place
(70%), two alike often as a count ("two circles"), sometimes only the background. They come in {frames} sentence
frames ("... on a blue background", "a blue background with ...", "...; the background is blue", "... and a blue
backdrop"), with synonyms, other word orders, articles or none, capitals, punctuation, and now and then words
that say nothing about the picture ("please", "a nice ...", ", digital art"). The last stage's captions may
also take {linked} frames where words that name no shape follow a joiner ("a red circle, everything on a
blue background", "a blue background, and in front of that a red circle"). Everything is drawn from a seeded
random generator (`generator/demo/scenes.py`).

Held out of all training (pictures and captions, both directions): for every (colour, shape) pair one of the
nine positions, and two alike shapes of six (colour, shape) pairs ("two green squares"). eval-demo's
combination and describe sections use only such scenes; its phrasing and variety sections use sentence frames
no training caption uses (`generator/demo/phrasings.py`).

## Sizes

- {stats["parameters"] / 1e6:.2f} M parameters, {weights / 2**20:.1f} MiB of bf16 safetensors.
- Language model: {DEMO.layers} layers, hidden {DEMO.hidden}, {DEMO.heads} heads, MLP {DEMO.mlp}; a byte-level BPE
  vocabulary of the demo's words (any text encodes) with the Janus special tokens and chat template.
- VQ-VAE: {DEMO.image_size} px -> {DEMO.grid}x{DEMO.grid} tokens of {DEMO.patch} px, codebook {DEMO.codebook} x
  {DEMO.vq_embed} (l2-normalised), {DEMO.vq_channels} channels at every level, no extra residual blocks.
- Vision encoder: {DEMO.vision_layers} layers, hidden {DEMO.vision_hidden}, {DEMO.vision_heads} heads, on the same
  {DEMO.patch} px patches; the aligner maps them into the language model.

## Training

With {stats["threads"]} CPU threads on a shared 2-core machine, {seconds["total"]} s in all{provenance}:

- VQ-VAE decoder and codebook, {budget["vq_steps"]} steps of {budget["vq_batch"]} pictures (half of them two
  shapes in neighbouring cells), then the encoder, {budget["encoder_steps"]} steps ({seconds["vq"]} s in all).
  Each token's code is given by what the scene holds there: a background token's colour; a shape's first token
  (its cell's top-left quarter) one code that says only "a shape begins", its other three (colour, shape, size,
  quarter) ({IN_USE} codes in use). The decoder learns to draw the codes (L1 + squared error, each shape's box
  weighted up), then the encoder to find them (it finds {stats["vq"]["encoder_agreement"]:.1%} of the codes of
  512 held-aside scenes). With one token for "which shape begins here", guidance multiplied the odds of starting
  the prompt's shape at every cell it passed, so a prompt that leaves the place open always drew it in the
  first cell; split in two, the place is decided where conditional and unconditional rows agree.
- Both directions of the language model together, {budget["lm_steps"]} steps ({seconds["lm"]} s) over
  {budget["scenes"]} training scenes with four captions each:
  - drawing: {budget["lm_batch"]} caption -> code-grid sequences a step, teacher-forced as the engine lays them
    out; captions dropped {budget["uncond"]:.0%} of the time for classifier-free guidance, with label smoothing
    {budget["uncond_smoothing"]:g} on those rows, and {budget["mismatch"]:.0%} of the others given another
    scene's caption (scraped captions often describe something else: that is what gives guidance its work;
    docs/benchmarks.md has the history). The tokens that decide a picture (every cell's first token, and the
    token after a shape begins) count {budget["decision_weight"]:g} times, the token that says which shape
    (colour, kind, size) {budget["identity_weight"]:g} times: which tokens these are never depends on their own
    value, so the learned probabilities stay as they are and open attributes stay spread;
  - reading: {budget["describe_batch"]} pictures a step (half of the first {budget["decoded"]} scenes as the VQ-VAE
    draws them, what imagine shows; the others rendered) through describe's own prompt
    (`generator/describe.py`: the picture, then the instruction, in one user turn), answered with a caption
    naming every attribute in one of {len(scenes.FRAMES_FULL)} sentence frames; a sixth of the rows ask in other words.
- Both directions again, {budget["tune_steps"]} steps at learning rate {budget["tune_lr"]:g} ({seconds["tune"]} s), over
  {budget["tune_scenes"]} fresh scenes whose captions may also take the frames with words after a joiner (Data, above).
  Trained on the other frames alone, the model read any word after a joiner that is not a background as a
  second shape ("a blue background, and on it a red circle" drew two).

Final teacher-forced accuracy on the drawing side {tune["token_accuracy"]:.3f} (decision tokens
{tune["decision_accuracy"]:.3f}: much of what they decide is left open by the captions); on the reading side
{tune["describe_token_accuracy"]:.3f} of the answers' tokens (which of the sentence frames an answer takes is
open too).
Weights are stored in bf16, as the published Janus checkpoints are, and load as fp32 on a CPU.

## Scores

`janus-bot eval-demo` ({PROMPTS} held-out combination prompts x 4 images at cfg 1 and 5, temperature 1;
{PHRASINGS} prompts in held-out phrasings x 4 images; {len(phrasings.variety_prompts())} prompts that leave attributes
open x {SEEDS} seeds; describe at temperature {DESCRIBE_TEMPERATURE:g} and greedy on the {PROMPTS} held-out
scenes; the held-out pairs of two different shapes again in plain words, with and without their places;
pictures checked by `generator/demo/checker.py`, answers read back by `generator/demo/parser.py`):

```
{chr(10).join(lines)}
```

Targets (issue 23): phrasing at least {TARGETS["phrasing"]:.2f} of pictures with every named attribute right at
the default cfg: {verdict["phrasing"]}. A prompt naming one attribute gives at least {TARGETS["distinct"]}
different pictures in {SEEDS} seeds: {verdict["variety"]}. Describe: at least {TARGETS["describe"]:.2f} of
held-out captions with every attribute right: {verdict["describe"]}. Held-out combinations at least
{TARGETS["combination"]:.2f} at the default cfg and above cfg 1: {verdict["combination"]}. docs/benchmarks.md
("Demo model v2") has how the recipe got here.

The `pairs` line is no target; it shows the weakest case. Two different shapes named without their places ("a red
square and a yellow circle on a blue background") often come out with a colour on the other shape's kind; the same
scenes with a place named after each shape ("a red square in the top left and a yellow circle in the bottom right
...") come out right far more often, so name the places when you ask for two shapes.
"""
    (model_dir / "README.md").write_text(text)
    return lines
