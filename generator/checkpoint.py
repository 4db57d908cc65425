"""Load a Janus checkpoint (hub id or local directory) with its processor."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import (
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    is_offline_mode,
    snapshot_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm
from transformers import JanusConfig, JanusForConditionalGeneration, JanusProcessor
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from generator.quantize import QuantizeError, quantize_model, unsupported

log = logging.getLogger(__name__)
download_log = logging.getLogger("generator.download")  # shown by the CLI and the generator process alike
DOWNLOAD_LOG_EVERY_S = 15.0
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt"]  # what from_pretrained reads

KNOWN_CHECKPOINTS = (
    "deepseek-community/Janus-Pro-1B",
    "deepseek-community/Janus-Pro-7B",
    "deepseek-community/Janus-1.3B",
)


class CheckpointError(Exception):
    """A checkpoint could not be loaded; the message is one sentence for the operator."""


@dataclass
class Checkpoint:
    """A loaded model with everything the engine needs to know about it."""

    model: JanusForConditionalGeneration
    processor: JanusProcessor
    name: str
    quantize: str = "none"  # the language model's linear layers: none, int8 or int4 (generator.quantize)

    def __post_init__(self) -> None:
        fuse_norms(self.model)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def grid_size(self) -> int:
        return int(self.model.model.vqmodel.quantize.quant_state_dims[0])

    @property
    def num_image_tokens(self) -> int:
        return self.grid_size * self.grid_size


def _rms_norm(self: LlamaRMSNorm, hidden_states: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.rms_norm(hidden_states, self.weight.shape, self.weight, self.variance_epsilon)


def fuse_norms(model: JanusForConditionalGeneration, fused: bool = True) -> None:
    """Run the language model's RMSNorms as torch's one-kernel `rms_norm` (or, not `fused`, as transformers' own).

    transformers' version is five elementwise kernels per call and a decode step calls it twice a layer;
    on a GPU those launches cost more than the arithmetic (docs/benchmarks.md, second H200 session).
    The result is the same normalisation, rounded once instead of twice in bf16.
    """
    for module in model.model.language_model.modules():
        if isinstance(module, LlamaRMSNorm):
            if fused:
                module.forward = types.MethodType(_rms_norm, module)
            else:
                vars(module).pop("forward", None)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_device(name: str | torch.device | None) -> torch.device:
    """The device to run on (None or "auto": CUDA when there is one), checked: it must be usable here."""
    if name is None or name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CheckpointError(f"Unknown device {str(name)!r}; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise CheckpointError(f"Cannot use device {str(name)!r}: this torch ({torch.__version__}) is a build "
                                  f"without CUDA; install its CUDA build, or use cpu.")
        count = torch.cuda.device_count()
        if count == 0:
            raise CheckpointError(f"Cannot use device {str(name)!r}: no CUDA GPU is visible (check the driver "
                                  f"and CUDA_VISIBLE_DEVICES), or use cpu.")
        if device.index is not None and device.index >= count:
            raise CheckpointError(f"Cannot use device {str(name)!r}: this machine has {count} CUDA GPU(s), "
                                  f"cuda:0 to cuda:{count - 1}.")
    try:
        torch.empty(0, device=device)  # other kinds: whether this torch can use it at all
    except (RuntimeError, AssertionError, NotImplementedError) as err:
        raise CheckpointError(f"Cannot use device {str(name)!r}: {first_line(err)}") from None
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None or name == "auto":
        return default_dtype(device)
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise CheckpointError(f"Unknown dtype {name!r}; use one of: auto, {', '.join(sorted(_DTYPES))}.") from None


def _looks_like_path(name: str) -> bool:
    # Hub ids are "owner/name"; anything else with a slash, or rooted, means a directory.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _check_local(path: Path) -> None:
    config = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(f"Model path {str(path)!r} is not a directory; give a checkpoint directory or a hub id.")
    if not config.is_file():
        raise CheckpointError(f"{str(path)!r} is not a Janus checkpoint: it has no config.json.")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} has an unreadable config.json ({err}).") from None
    if model_type != "janus":
        raise CheckpointError(
            f"{str(path)!r} is not a Janus checkpoint (model_type is {model_type!r}, expected 'janus'); "
            f"convert it to the transformers format first."
        )


def load_checkpoint(
    name: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    quantize: str = "none",
) -> Checkpoint:
    """Load model and processor from one place; bf16 on CUDA, fp32 on CPU unless told otherwise.

    `quantize` (int8, int4) makes the language model's linear layers weight-only quantized on the device.
    """
    name = str(name)
    dev = parse_device(device)
    dt = dtype if isinstance(dtype, torch.dtype) else parse_dtype(dtype, dev)
    problem = unsupported(quantize, dev, dt)  # before minutes of download and loading
    if problem:
        raise CheckpointError(problem)
    path = Path(name).expanduser()
    local, cache_only = path.exists() or _looks_like_path(name), False
    if local:
        _check_local(path)
        source = str(path)
    else:
        source = name
        try:
            cached = isinstance(try_to_load_from_cache(source, "config.json"), str)
        except ValueError:  # not of the form owner/name
            raise CheckpointError(_not_found_message(source)) from None
        if is_offline_mode() or not _hub_answers(source):
            if not cached:
                raise CheckpointError(_offline_message(source))
            download_log.info("the hub cannot be reached; loading %s from the local cache", source)
        else:
            _download(source, first=not cached)
        cache_only = True
    try:
        processor = JanusProcessor.from_pretrained(source, local_files_only=cache_only)
        model = JanusForConditionalGeneration.from_pretrained(source, dtype=dt, attn_implementation="sdpa",
                                                              local_files_only=cache_only)
    except OSError as err:
        if local:
            raise CheckpointError(f"Could not read the checkpoint in {source!r}: {first_line(err)}") from None
        if is_offline_mode() or "offline" in str(err).lower() or _is_connection(err):
            raise CheckpointError(_offline_message(source)) from None
        raise CheckpointError(_not_found_message(source)) from None
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{source!r} is not a usable Janus checkpoint: {first_line(err)}") from None
    if quantize == "none":
        model.to(dev)
    else:
        try:
            quantize_model(model, quantize, dev)
        except QuantizeError as err:
            raise CheckpointError(str(err)) from None
    model.eval()
    model.requires_grad_(False)
    log.info("loaded %s on %s in %s%s", source, dev, str(dt).removeprefix("torch."),
             "" if quantize == "none" else f", language model layers {quantize}")
    return Checkpoint(model=model, processor=processor, name=source, quantize=quantize)


def load_config(name: str | os.PathLike[str]) -> JanusConfig:
    """A checkpoint's config alone, from a local directory or the hub: no weights, nothing fetched but config.json."""
    name = str(name)
    path = Path(name).expanduser()
    if path.exists() or _looks_like_path(name):
        _check_local(path)
        file = path / "config.json"
    else:
        try:
            cached = try_to_load_from_cache(name, "config.json")
        except ValueError:  # not of the form owner/name
            raise CheckpointError(_not_found_message(name)) from None
        if isinstance(cached, str):
            file = Path(cached)
        elif is_offline_mode() or not _hub_answers(name):
            raise CheckpointError(_offline_message(name))
        else:
            try:
                file = Path(hf_hub_download(name, "config.json"))
            except HfHubHTTPError:
                raise CheckpointError(_not_found_message(name)) from None
            except (HTTPError, OSError) as err:
                raise CheckpointError(f"Downloading {name!r}'s config.json failed: {first_line(err)}; try again."
                                      ) from None
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{name!r} has an unreadable config.json ({err}).") from None
    if config.get("model_type") != "janus":
        raise CheckpointError(f"{name!r} is not a Janus checkpoint (model_type is {config.get('model_type')!r}, "
                              f"expected 'janus').")
    return JanusConfig.from_dict(config)


def load_from_args(args: argparse.Namespace) -> Checkpoint:
    """The checkpoint a command's `--model`, `--device`, `--dtype` and `--quantize` name, libraries quieted first;
    UsageError in one sentence when it cannot be found, fetched, quantized or moved to that device."""
    from generator.cli import UsageError, quiet_transformers

    quiet_transformers()
    try:
        return load_checkpoint(resolve_model(args.model), device=args.device, dtype=args.dtype,
                               quantize=getattr(args, "quantize", "none"))
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    except RuntimeError as err:  # the device failed while the model moved there
        raise UsageError(f"Cannot use device {args.device!r}: {first_line(err)}") from None


def _download(source: str, *, first: bool) -> None:
    """Bring the checkpoint's files into the hub's cache (only those it lacks), logging the progress.

    A 7B checkpoint is 15 GB: minutes of download that would otherwise pass without a line, and the bot
    gives up on a generator that is silent for too long.
    """
    if first:
        download_log.info("downloading %s from the hub into its cache (once)", source)
    try:
        snapshot_download(source, allow_patterns=CHECKPOINT_FILES, tqdm_class=_progress_lines(source))
    except HfHubHTTPError:
        pass  # not found, gated, ...: from_pretrained, from the cache, says what is missing
    except (HTTPError, OSError) as err:
        raise CheckpointError(f"Downloading {source!r} failed: {first_line(err)}; try again.") from None


def _progress_lines(source: str) -> type[tqdm]:
    """A tqdm that draws nothing and logs a line about the bytes every DOWNLOAD_LOG_EVERY_S seconds."""
    last = [time.monotonic()]

    class Lines(tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            # Bytes written (the hub's client also counts bytes received, on a bar of an estimated total).
            written = self.unit == "B" and not str(self.desc).startswith("Downloading bytes") and self.total
            if written and time.monotonic() - last[0] >= DOWNLOAD_LOG_EVERY_S:
                last[0] = time.monotonic()
                download_log.info("downloading %s: %.2f of %.2f GB", source, self.n / 1e9, self.total / 1e9)
            return shown

        def close(self) -> None:
            super().close()
            self.fp.close()

    return Lines


def _hub_answers(source: str) -> bool:
    """Whether the hub answers a request for the checkpoint's config.json: one try; an answer that it has
    no such checkpoint is a CheckpointError.

    Asked once before loading because the hub's client retries a failed connection five times a file with
    growing pauses, and a checkpoint is a dozen files: minutes of warnings before the one error.
    """
    try:
        get_hf_file_metadata(hf_hub_url(source, "config.json"), timeout=10)
    except GatedRepoError:  # there, behind terms to accept: loading says so
        return True
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
        raise CheckpointError(_not_found_message(source)) from None
    except HfHubHTTPError:  # some other answer (a server error after retries): loading says what
        return True
    except HTTPError:  # no answer: refused, unknown host, timed out
        return False
    return True


def _not_found_message(source: str) -> str:
    return (f"Model {source!r} is neither a local directory nor a hub id that could be fetched "
            f"(known ids: {', '.join(KNOWN_CHECKPOINTS)}).")


def _offline_message(source: str) -> str:
    return (
        f"Model {source!r} is not in the local cache and the hub cannot be reached; "
        f"download it on a connected machine or give a local checkpoint directory."
    )


def is_device_failure(err: BaseException) -> bool:
    """Whether an error leaves the device unusable: a sticky CUDA error, unlike out-of-memory."""
    if isinstance(err, torch.OutOfMemoryError):
        return False
    return isinstance(err, torch.AcceleratorError) or "CUDA error" in str(err)


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's first line (at most `limit` characters), for a one-line message."""
    text = str(err).strip().splitlines()
    return text[0][:limit] if text else type(err).__name__


def _is_connection(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if "connect" in type(seen).__name__.lower() or "connection" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def cache_dir() -> Path:
    """Where janus-bot keeps what it builds: $JANUS_BOT_CACHE, else $XDG_CACHE_HOME/janus-bot."""
    root = os.environ.get("JANUS_BOT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "janus-bot"
    return Path(root).expanduser()


DEFAULT_MODEL = "builtin:demo"  # the demo model shipped in generator/demo_model (see its README.md)
RANDOM_MODEL = "builtin:tiny"  # random weights of the tiny preset, for tests that want no trained model
DEMO_MODEL_DIR = Path(__file__).with_name("demo_model")


def resolve_model(name: str | None) -> str:
    """A model name as given; no name is the shipped demo model, `builtin:tiny` random weights built on first use."""
    if not name or name == DEFAULT_MODEL:
        return str(DEMO_MODEL_DIR)
    if name != RANDOM_MODEL:
        return name
    from generator.presets import make_model

    target = cache_dir() / "models" / "tiny-random-v1"
    if not (target / "config.json").is_file():
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            make_model(partial, "tiny", seed=0)
        except OSError as err:
            raise CheckpointError(f"Cannot build {RANDOM_MODEL} in {str(target.parent)!r} ({err.strerror or err}); "
                                  f"set JANUS_BOT_CACHE to a directory you can write in.") from None
        try:
            partial.rename(target)
        except OSError:  # another process finished first
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return str(target)
