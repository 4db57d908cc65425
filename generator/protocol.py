"""What the bot and the generator agree on; torch-free, the only generator module the bot imports."""

from __future__ import annotations

import argparse
import base64
import json
import math
from dataclasses import asdict, dataclass

MAX_PROMPT_CHARS = 1000
COUNT_RANGE = (1, 16)
CFG_RANGE = (1.0, 10.0)
TEMPERATURE_RANGE = (0.0, 1.5)
SEED_MAX = 2**63 - 1
DEFAULTS = {"count": 4, "cfg": 5.0, "temperature": 1.0}
MAX_IMAGE_BYTES = 32 * 2**20  # a picture to start from; base64 in one Generate line, it fits the generator's limit
MAX_IMAGE_PIXELS = 64_000_000  # its width x height, checked before it is decoded (a decompression bomb never is)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # told by content; an animated picture's first frame is used
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}  # pictures written, by suffix
DEFAULT_REGION = (0.0, 0.5, 1.0, 1.0)  # what a picture to start from has regenerated when no region is given
DESCRIBE_TEMPERATURE_RANGE = (0.0, 2.0)
DESCRIBE_MAX_TOKENS = 512  # the most new tokens a described prompt may take


QUANTIZE_MODES = ("none", "int8", "int4")  # weight-only, of the language model's linear layers (generator.quantize)


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator process's options: `python -m generator serve` and `janus-bot worker` (which starts one)."""
    parser.add_argument("--model", help="hub id or checkpoint directory (default: the built-in model)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    parser.add_argument("--dtype", help="auto, bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    add_quantize_argument(parser)
    parser.add_argument("--max-batch-images", type=int, default=16, metavar="N",
                        help="image slots sampled together, across jobs (default 16)")
    parser.add_argument("--preview-every", type=int, metavar="K",
                        help="steps between preview images; 0 for none (default: every 5%% of the tokens)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decode step with torch.compile at start (falls back to eager)")
    parser.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)  # crash tests only


def add_quantize_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default="none",
                        help="weight-only quantization of the language model's linear layers: int8 (about half the "
                             "memory) or int4 (about a third); none keeps the dtype's weights (default none)")


class OptionError(ValueError):
    """An option out of range; the message is a sentence telling the user what to change."""


def _number(name: str, value: float, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise OptionError(f"{name} must be a number between {low:g} and {high:g}.")
    if not low <= value <= high:
        raise OptionError(f"{name} must be between {low:g} and {high:g}; you gave {value:g}.")
    return float(value)


def check_prompt(prompt: str) -> str:
    """The prompt, stripped; refuses empty and over-long ones."""
    text = prompt.strip() if isinstance(prompt, str) else ""
    if not text:
        raise OptionError("The prompt is empty; describe the picture you want.")
    if len(text) > MAX_PROMPT_CHARS:
        raise OptionError(f"The prompt is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS}.")
    return text


def check_negative(negative: str | None) -> str | None:
    """A negative prompt, stripped (None when there is none); the same limits as a prompt."""
    text = negative.strip() if isinstance(negative, str) else ""
    if len(text) > MAX_PROMPT_CHARS:
        raise OptionError(f"The negative prompt is {len(text)} characters long; keep it under {MAX_PROMPT_CHARS}.")
    return text or None


def check_region(region: object) -> tuple[float, float, float, float]:
    """A region [x0, y0, x1, y1] in fractions of the picture's width and height, left to right and top to bottom:
    four numbers in [0, 1] enclosing a positive area."""
    if (not isinstance(region, (list, tuple)) or len(region) != 4 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in region)):
        raise OptionError("A region is four numbers X0,Y0,X1,Y1, fractions of the width and height "
                          "(the bottom half is 0,0.5,1,1).")
    x0, y0, x1, y1 = (float(v) for v in region)
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise OptionError(f"A region's corners must lie between 0 and 1; you gave {x0:g},{y0:g},{x1:g},{y1:g}.")
    if not (x0 < x1 and y0 < y1):
        raise OptionError(f"The region {x0:g},{y0:g},{x1:g},{y1:g} is empty; X0 must be below X1 and Y0 below Y1 "
                          f"(the bottom half is 0,0.5,1,1).")
    return x0, y0, x1, y1


def parse_region(text: str) -> tuple[float, float, float, float]:
    """'X0,Y0,X1,Y1' (fractions) as a checked region."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    return check_region(values)


def check_options(count: int, cfg: float, temperature: float, seed: int | None) -> None:
    """Raise OptionError for the first option out of range."""
    if isinstance(count, bool) or not isinstance(count, int) or not COUNT_RANGE[0] <= count <= COUNT_RANGE[1]:
        raise OptionError(f"count must be a whole number from {COUNT_RANGE[0]} to {COUNT_RANGE[1]}; you gave {count}.")
    _number("cfg", cfg, *CFG_RANGE)
    _number("temperature", temperature, *TEMPERATURE_RANGE)
    _seed(seed)


def check_describe(count: int, temperature: float, seed: int | None, instruction: str | None = None,
                   max_tokens: int | None = None) -> None:
    """Raise OptionError for the first describe option out of range; None is the generator's default."""
    if isinstance(count, bool) or not isinstance(count, int) or not COUNT_RANGE[0] <= count <= COUNT_RANGE[1]:
        raise OptionError(f"count must be a whole number from {COUNT_RANGE[0]} to {COUNT_RANGE[1]} prompts; "
                          f"you gave {count}.")
    _number("temperature", temperature, *DESCRIBE_TEMPERATURE_RANGE)
    _seed(seed)
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()
                                    or len(instruction) > MAX_PROMPT_CHARS):
        raise OptionError(f"The instruction must be text of 1 to {MAX_PROMPT_CHARS} characters.")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= DESCRIBE_MAX_TOKENS):
        raise OptionError(f"max_tokens must be a whole number from 1 to {DESCRIBE_MAX_TOKENS}; you gave {max_tokens}.")


def _seed(seed: int | None) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX):
        raise OptionError(f"seed must be a whole number from 0 to {SEED_MAX}; you gave {seed}.")


# -- messages between the bot and the generator process ---------------------------------------------
# Each message is one JSON object with a "type" field; bytes travel base64-encoded. The wire framing
# (one JSON object per line over the process's pipe or a local socket) belongs to generator.server.


@dataclass(frozen=True)
class Generate:
    """bot -> generator: make `count` images; `prefix` forces each image's first tokens (variations);
    `negative`, when given, is the prompt the unconditional rows of guidance read instead of pads.

    Forced cells (image prompts, Vary (Region)): `image` (a picture file's bytes, encoded by the generator)
    or `codes` (a token grid, row-major, as stored with a result) gives every cell outside `region`
    ([x0, y0, x1, y1] in fractions of the width and height; the bottom half when not given), which is made
    again.
    """

    job_id: str
    prompt: str
    count: int
    cfg: float
    temperature: float
    seed: int
    prefix: list[list[int]] | None = None  # [count][k] token ids, row-major over the token grid
    negative: str | None = None
    image: bytes | None = None
    codes: list[int] | None = None
    region: list[float] | None = None
    type: str = "generate"


@dataclass(frozen=True)
class Describe:
    """bot -> generator: `count` prompts that would draw a picture (a file's bytes), read by the model's own
    understanding path, sampled at `temperature` (0: greedy) from `seed`; `instruction` and `max_tokens`
    default to the generator's ([describe] in the bot's config sends them)."""

    job_id: str
    image: bytes
    count: int
    temperature: float
    seed: int
    instruction: str | None = None
    max_tokens: int | None = None
    type: str = "describe"


@dataclass(frozen=True)
class Cancel:
    """bot -> generator: stop a job; answered by Cancelled (or nothing if it already finished)."""

    job_id: str
    type: str = "cancel"


@dataclass(frozen=True)
class Shutdown:
    """bot -> generator: finish the current step, then exit."""

    type: str = "shutdown"


@dataclass(frozen=True)
class Ready:
    """generator -> bot: the model is loaded. `prompt_tokens` is how many tokens a prompt's own text may take
    (the chat template's are already counted), `tokenizer` the model's tokenizer.json on this machine: with
    them the bot refuses an over-long prompt up front rather than after it waited in the queue."""

    model: str
    device: str
    image_size: int
    grid_size: int
    max_batch_images: int
    prompt_tokens: int | None = None
    tokenizer: str | None = None
    type: str = "ready"


@dataclass(frozen=True)
class Waiting:
    """queue -> bot: a job waiting in a queue shared by several bots is now `position` (1 is next)."""

    job_id: str
    position: int
    type: str = "waiting"


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    type: str = "started"


@dataclass(frozen=True)
class JobProgress:
    """generator -> bot: `step` of `total` tokens; a PNG preview every few percent."""

    job_id: str
    step: int
    total: int
    preview: bytes | None = None
    type: str = "progress"


@dataclass(frozen=True)
class JobDone:
    """generator -> bot: one PNG and one token grid (row-major ids) per image, in image order."""

    job_id: str
    images: list[bytes]
    tokens: list[list[int]]
    model: str | None = None  # the checkpoint that made them, as its queue knows it
    type: str = "done"


@dataclass(frozen=True)
class Described:
    """generator -> bot: a describe job's prompts, cleaned to show (control characters out, whitespace collapsed,
    cut at a sentence end), and the raw token ids each was sampled as."""

    job_id: str
    prompts: list[str]
    tokens: list[list[int]]
    model: str | None = None
    type: str = "described"


@dataclass(frozen=True)
class JobFailed:
    job_id: str
    reason: str
    type: str = "failed"


@dataclass(frozen=True)
class JobCancelled:
    job_id: str
    type: str = "cancelled"


Message = (Generate | Describe | Cancel | Shutdown | Ready | Waiting | JobStarted | JobProgress | JobDone | Described
           | JobFailed | JobCancelled)
FINAL = JobDone | Described | JobFailed | JobCancelled  # the messages that end a job
Work = Generate | Describe  # what a queue hands a generator
_TYPES: dict[str, type] = {cls.__dataclass_fields__["type"].default: cls for cls in Message.__args__}


def dumps(message: Message) -> str:
    """One line of JSON."""
    data = {}
    for name, value in asdict(message).items():
        if isinstance(value, bytes):
            value = {"b64": base64.b64encode(value).decode()}
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [{"b64": base64.b64encode(v).decode()} for v in value]
        data[name] = value
    return json.dumps(data, separators=(",", ":"))


def loads(line: str | bytes) -> Message:
    """The message of one line; ValueError for anything else."""
    data = json.loads(line)
    cls = _TYPES.get(data.pop("type", None)) if isinstance(data, dict) else None
    if cls is None:
        raise ValueError(f"not a protocol message: {str(line)[:80]!r}")

    def unwrap(value: object) -> object:
        if isinstance(value, dict) and set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        if isinstance(value, list):
            return [unwrap(v) for v in value]
        return value

    return cls(**{k: unwrap(v) for k, v in data.items()})
