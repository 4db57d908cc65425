"""`janus-bot bench`: the reference loop, transformers' generate and the engine on one workload, one process."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from generator.checkpoint import Checkpoint, CheckpointError, parse_device, parse_dtype
from generator.cli import UsageError, command, quiet_transformers
from generator.engine import Engine, Request
from generator.presets import PRESETS, build_memory_problem, build_model
from generator.prompt import format_prompt
from generator.quantize import MODES, unsupported
from generator.reference import reference_generate
from generator.slots import kv_bytes_per_row

PROMPTS = [
    "a lighthouse at dusk", "a red fox in the snow", "an astronaut riding a horse on the moon",
    "a bowl of ramen, watercolor", "a castle on a hill under a starry sky", "a robot reading a book in a library",
    "a yellow taxi in the rain at night", "a field of sunflowers at sunrise", "a portrait of an old fisherman",
    "a tiny house in a forest clearing", "a dragon made of clouds", "a city street in the style of an oil painting",
    "two cats sleeping on a windowsill", "a sailboat on a calm blue ocean", "a mountain village in the fog",
    "an owl on a branch, detailed drawing",
]


@dataclass
class Measurement:
    name: str
    images: int
    seconds: float
    steps: int
    latencies: list[float]
    peak_bytes: int
    note: str = ""
    step_gaps: list[float] = dataclasses.field(default_factory=list)  # start to start of steps while busy

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def s_per_step(self) -> float:
        return self.seconds / self.steps


class PeakMemory:
    """Peak memory over a block: max allocated on CUDA, resident set size (sampled every 5 ms) on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _return_freed_memory()  # or the method measured before this one counts in the resident set
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            self._stop.wait(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


@functools.cache
def libc_function(name: str) -> Callable[..., int] | None:
    """A C library function, looked up once (find_library runs ldconfig); None where there is none."""
    libc = ctypes.util.find_library("c")
    with contextlib.suppress(OSError, AttributeError):
        return getattr(ctypes.CDLL(libc), name) if libc else None
    return None


def _return_freed_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc keeps it mapped otherwise)."""
    gc.collect()
    trim = libc_function("malloc_trim")  # glibc's
    if trim is not None:
        trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_at_a_time(name: str, checkpoint: Checkpoint, requests: list[Request], arrivals: list[float],
                   run: Callable[[Request], None]) -> Measurement:
    """Serve requests in arrival order, one finishing before the next starts (as today's bots do)."""
    device = checkpoint.device
    latencies = []
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        for request, arrival in zip(requests, arrivals):
            wait = start + arrival - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            run(request)
            _sync(device)
            latencies.append(time.perf_counter() - start - arrival)
        seconds = time.perf_counter() - start
    steps = len(requests) * checkpoint.num_image_tokens
    return Measurement(name, sum(r.num_images for r in requests), seconds, steps, latencies, memory.peak)


def run_reference(checkpoint: Checkpoint, requests: list[Request], arrivals: list[float]) -> Measurement:
    def run(r: Request) -> None:
        reference_generate(checkpoint, r.prompt, r.num_images, cfg=r.cfg, temperature=r.temperature, seed=r.seed)

    return _one_at_a_time("reference", checkpoint, requests, arrivals, run)


def run_transformers(checkpoint: Checkpoint, requests: list[Request], arrivals: list[float]) -> Measurement:
    model, processor = checkpoint.model, checkpoint.processor

    @torch.inference_mode()
    def run(r: Request) -> None:
        inputs = processor(text=format_prompt(processor, r.prompt), generation_mode="image", return_tensors="pt")
        torch.manual_seed(r.seed)
        model.generate(**inputs.to(checkpoint.device), generation_mode="image", do_sample=True,
                       temperature=r.temperature, num_return_sequences=r.num_images, guidance_scale=r.cfg)

    return _one_at_a_time("transformers", checkpoint, requests, arrivals, run)


def run_engine(checkpoint: Checkpoint, requests: list[Request], arrivals: list[float], *, max_batch_images: int,
               graphs: bool | None, compile: bool = False) -> Measurement:
    """All requests through one engine; each joins at the first step after it arrives."""
    device = checkpoint.device
    engine = Engine(checkpoint, max_batch_images=max_batch_images, graphs=graphs, compile=compile)
    pending = list(zip(requests, arrivals))
    arrived = {r.id: a for r, a in zip(requests, arrivals)}
    latencies: dict[str, float] = {}
    waits: list[float] = []
    missed: list[int] = []
    steps = 0
    step_starts: list[float] = []
    step_seconds: list[float] = []
    gaps: list[float] = []
    busy_after = False
    with PeakMemory(device) as memory, torch.inference_mode():
        start = time.perf_counter()
        while pending or engine.busy:
            now = time.perf_counter() - start
            if not engine.busy and pending and pending[0][1] > now:
                time.sleep(pending[0][1] - now)
                now = pending[0][1]
            joining = []
            while pending and pending[0][1] <= now and pending[0][0].num_images <= engine.free_images - sum(
                    r.num_images for r in joining):
                joining.append(pending.pop(0)[0])
            if joining:
                engine.add(joining)
                for r in joining:  # steps that began after it arrived and ran without it
                    missed.append(sum(1 for t in step_starts if t >= arrived[r.id]))
                    waits.append(now - arrived[r.id])
            step_starts.append(time.perf_counter() - start)
            if busy_after:
                gaps.append(step_starts[-1] - step_starts[-2])
            for result in engine.step():
                _sync(device)
                latencies[result.request.id] = time.perf_counter() - start
            step_seconds.append(time.perf_counter() - start - step_starts[-1])
            steps += 1
            busy_after = engine.busy or bool(pending and pending[0][1] <= time.perf_counter() - start)
        _sync(device)
        seconds = time.perf_counter() - start
    lat = [latencies[r.id] - arrived[r.id] for r in requests]
    note = f"decode steps through the {engine.decode_path}"
    if any(a > 0 for a in arrivals):
        note += (f"; {sum(m == 0 for m in missed)} of {len(missed)} requests joined at the first step after "
                 f"arriving (most steps missed: {max(missed)}; longest wait {max(waits) * 1000:.0f} ms, "
                 f"median step {statistics.median(step_seconds) * 1000:.0f} ms)")
    return Measurement("engine", sum(r.num_images for r in requests), seconds, steps, lat, memory.peak, note, gaps)


# Peak HBM bandwidth in bytes/s of cards the floor is worked out for (vendor figures).
BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
             "A100": 1.55e12, "L40S": 0.864e12, "RTX 4090": 1.008e12}


def bytes_per_step(checkpoint: Checkpoint, images: int, prompt_tokens: int = 32) -> float:
    """Bytes one decode step must read: the generation path's weights plus the average KV cache."""
    core = checkpoint.model.model
    modules = [core.language_model, core.generation_head, core.generation_aligner]
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    text_embeddings = core.language_model.embed_tokens.weight  # only the prompt reads these, not a step
    weights -= text_embeddings.numel() * text_embeddings.element_size()
    mean_length = prompt_tokens + checkpoint.num_image_tokens / 2
    return weights + 2 * images * kv_bytes_per_row(checkpoint, round(mean_length))


def bandwidth_of(device: torch.device) -> tuple[str, float] | None:
    """The card's name and peak bandwidth, when known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in BANDWIDTH.items():
        if key.lower() in name.lower():
            return name, value
    return None


def _median(runs: list[Measurement]) -> Measurement:
    """The run with the median time (of an even number, the faster of the middle two)."""
    return sorted(runs, key=lambda m: m.seconds)[(len(runs) - 1) // 2]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _format(m: Measurement) -> str:
    return (f"{m.name:<13} {m.images_per_s:9.3f} {m.s_per_step * 1000:10.2f} {_percentile(m.latencies, 0.5):10.2f}"
            f" {_percentile(m.latencies, 0.95):10.2f} {m.peak_bytes / 2**20:11.0f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="tiny, small, janus-pro-1b or janus-pro-7b (default small)")
    parser.add_argument("--tokens", type=int, help="tokens per image, a square (default: the preset's; small: 144)")
    parser.add_argument("--requests", type=int, default=8, help="number of requests (default 8)")
    parser.add_argument("--images", type=int, default=4, help="images per request (default 4)")
    parser.add_argument("--arrival", choices=["together", "staggered"],
                        help="all at once, or one every half of a lone request's time (default: together; "
                             "staggered with --serving)")
    parser.add_argument("--max-batch-images", type=int, help="engine slots (default: the whole workload)")
    parser.add_argument("--repeat", type=int,
                        help="runs of each method, interleaved; the median is printed (default 3 on CPU, 1 on CUDA)")
    parser.add_argument("--workload", nargs="+", metavar="RxI",
                        help="several workloads on one model, e.g. 1x1 1x4 4x4 (requests x images each)")
    parser.add_argument("--graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="run the engine's decode step as captured CUDA graphs (default: on CUDA)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the engine's decode step with torch.compile (inductor) first")
    parser.add_argument("--skip", nargs="*", default=[], choices=["reference", "transformers"],
                        help="baselines to leave out")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--dtype", help="auto, bf16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--quantize", choices=MODES, default="none",
                        help="int8 or int4: the engine on the language model's layers quantized against the same "
                             "model unquantized: weight bytes, images/s and agreement (default none)")
    parser.add_argument("--serving", action="store_true",
                        help="the generator process through its protocol, pictures and previews included, against "
                             "the token-only engine; and the longest gap between its decode steps")
    parser.add_argument("--regions", action="store_true",
                        help="then the engine alone on the workload starting from a picture: the bottom half "
                             "regenerated, the top half, and both mixed with plain requests (cost per image)")
    parser.add_argument("--preview-every", type=int, metavar="K",
                        help="with --serving: steps between previews, 0 for none (default: the generator's, 5%%)")
    parser.add_argument("--describe", type=int, metavar="N",
                        help="with --serving: then the same workload with and without N describe jobs (4 prompts "
                             "each) arriving through it, interleaved --repeat times: images/s both ways")


@command
def run(args: argparse.Namespace) -> int:
    problem = check_arguments(args)
    if problem:
        raise UsageError(problem)
    quiet_transformers()
    try:
        return bench(args)
    except CheckpointError as err:  # a device or dtype this machine cannot use
        raise UsageError(str(err)) from None


def bench(args: argparse.Namespace) -> int:
    device = parse_device(args.device)
    dtype = parse_dtype(args.dtype, device)
    if args.repeat is None:  # a shared CPU's speed drifts from run to run; a GPU's hardly does
        args.repeat = 1 if device.type == "cuda" else 3
    if args.arrival is None:
        args.arrival = "staggered" if args.serving else "together"
    preset = PRESETS[args.preset]
    if args.tokens:
        side = math.isqrt(args.tokens)
        preset = dataclasses.replace(preset, image_size=preset.patch * side)
    problem = build_memory_problem(args.preset, device) or unsupported(args.quantize, device, dtype)
    if problem:
        raise UsageError(problem)
    torch.set_grad_enabled(False)
    if args.serving:
        from generator.bench_serving import run_serving

        return run_serving(args, preset, device, dtype)
    model, processor = build_model(preset, seed=0, device=device, dtype=dtype)
    checkpoint = Checkpoint(model, processor, f"random {args.preset}")
    workloads = [parse_workload(w) for w in args.workload] if args.workload else [(args.requests, args.images)]
    print(header(args, checkpoint), flush=True)
    if args.quantize != "none":
        from generator.bench_quantize import run_quantized

        return run_quantized(args, checkpoint, workloads)
    for requests_n, images in workloads:
        run_workload(checkpoint, args, requests_n, images)
        if args.regions:
            run_regions(checkpoint, args, requests_n, images)
    return 0


def header(args: argparse.Namespace, checkpoint: Checkpoint) -> str:
    """The first line: what the benchmark runs on."""
    device, dtype = checkpoint.device, checkpoint.dtype
    params = sum(p.numel() for p in checkpoint.model.parameters())
    return (f"janus-bot bench: preset {args.preset} ({params / 1e6:.0f}M parameters), "
            f"{checkpoint.num_image_tokens} tokens per image ({checkpoint.image_size} px), arrivals {args.arrival}, "
            f"{device.type} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads"
            + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
            + (", engine step compiled" if args.compile else ""))


def run_workload(checkpoint: Checkpoint, args: argparse.Namespace, requests_n: int, images: int) -> None:
    """One workload through every method, printed as a table."""
    requests = [Request(PROMPTS[i % len(PROMPTS)], num_images=images, cfg=5.0, temperature=1.0, seed=i,
                        id=f"bench{i}") for i in range(requests_n)]
    total = sum(r.num_images for r in requests)
    max_images = args.max_batch_images or total
    # Each method first serves what it will start with, untimed (the one-at-a-time loops the first request,
    # the engine the whole batch): its kernels for these shapes are loaded and chosen before any clock runs,
    # as in a bot that has served a request (docs/benchmarks.md has what a cold start cost on a GPU).
    if "reference" not in args.skip or args.arrival == "staggered":
        run_reference(checkpoint, requests[:1], [0.0])
    if "transformers" not in args.skip:
        run_transformers(checkpoint, requests[:1], [0.0])
    run_engine(checkpoint, requests, [0.0] * len(requests), max_batch_images=max_images, graphs=args.graphs,
               compile=args.compile)
    interval = 0.0
    if args.arrival == "staggered":  # one request every half of a lone request's time
        interval = run_reference(checkpoint, requests[:1], [0.0]).seconds / 2
    arrivals = [i * interval for i in range(len(requests))]
    methods: dict[str, Callable[[], Measurement]] = {}
    if "reference" not in args.skip:
        methods["reference"] = lambda: run_reference(checkpoint, requests, arrivals)
    if "transformers" not in args.skip:
        methods["transformers"] = lambda: run_transformers(checkpoint, requests, arrivals)
    methods["engine"] = lambda: run_engine(checkpoint, requests, arrivals, max_batch_images=max_images,
                                           graphs=args.graphs, compile=args.compile)
    rounds = f", median of {args.repeat} interleaved runs" if args.repeat > 1 else ""
    print(f"\n{requests_n} requests x {images} images{rounds}", flush=True)
    print(f"{'method':<13} {'images/s':>9} {'ms/step':>10} {'p50 lat s':>10} {'p95 lat s':>10} {'peak MiB':>11}",
          flush=True)
    runs: dict[str, list[Measurement]] = {name: [] for name in methods}
    for _ in range(args.repeat):  # each method once a round, so a slower spell of the machine hits them all
        for name, measure in methods.items():
            runs[name].append(measure())
            if args.repeat == 1:
                print(_format(runs[name][-1]), flush=True)
    results = [_median(measured) for measured in runs.values()]
    if args.repeat > 1:
        for result in results:
            print(_format(result), flush=True)
    engine = results[-1]
    if engine.note:
        print(f"engine: {engine.note}")
    card = bandwidth_of(checkpoint.device)
    if card is not None:
        floor = bytes_per_step(checkpoint, min(max_images, total)) / card[1]
        print(f"bandwidth floor on {card[0]}: {floor * 1000:.2f} ms/step; engine at "
              f"{engine.s_per_step / floor:.2f}x the floor")
    reference = next((m for m in results if m.name == "reference"), None)
    if reference is not None:
        print(f"speedup vs reference: {engine.images_per_s / reference.images_per_s:.2f}", flush=True)


REGIONS = {"bottom half": (0.0, 0.5, 1.0, 1.0), "top half": (0.0, 0.0, 1.0, 0.5)}


def region_requests(checkpoint: Checkpoint, requests: list[Request], kind: str) -> list[Request]:
    """The workload starting from a random picture grid: every request regenerating `kind` (a key of REGIONS),
    or, for "mixed", plain requests, bottom halves and top halves in turn."""
    from generator.codec import region_cells

    source = torch.randint(0, checkpoint.model.model.generation_embeddings.num_embeddings,
                           (checkpoint.num_image_tokens,), generator=torch.Generator().manual_seed(0))
    cycle = [None, *REGIONS] if kind == "mixed" else [kind]
    out = []
    for i, request in enumerate(requests):
        region = cycle[i % len(cycle)]
        keep = None if region is None else ~region_cells(checkpoint.grid_size, REGIONS[region])
        out.append(dataclasses.replace(request, id=f"{request.id}-{kind}", forced=None if keep is None else source,
                                       keep=keep))
    return out


def run_regions(checkpoint: Checkpoint, args: argparse.Namespace, requests_n: int, images: int) -> None:
    """The engine alone, plain and starting from a picture, on one workload arriving together: cost per image.

    A kept cell before a request's last regenerated one still takes a step (the bottom half's kept top rows:
    the step feeds the cell's code through the model, for the cells after it); kept cells after it take none
    (the top half's kept bottom rows: the request ends at its last regenerated cell).
    """
    plain = [Request(PROMPTS[i % len(PROMPTS)], num_images=images, cfg=5.0, temperature=1.0, seed=i,
                     id=f"bench{i}") for i in range(requests_n)]
    kinds = {"plain": plain, **{kind: region_requests(checkpoint, plain, kind) for kind in (*REGIONS, "mixed")}}
    max_images = args.max_batch_images or requests_n * images
    runs: dict[str, list[Measurement]] = {kind: [] for kind in kinds}
    for workload in kinds.values():  # warm-up, untimed
        run_engine(checkpoint, workload, [0.0] * len(workload), max_batch_images=max_images, graphs=args.graphs,
                   compile=args.compile)
    for _ in range(args.repeat):
        for kind, workload in kinds.items():
            runs[kind].append(run_engine(checkpoint, workload, [0.0] * len(workload), max_batch_images=max_images,
                                         graphs=args.graphs, compile=args.compile))
    rounds = f", median of {args.repeat} interleaved runs" if args.repeat > 1 else ""
    print(f"\nregions: {requests_n} requests x {images} images from a picture, engine only{rounds}", flush=True)
    print(f"{'regenerated':<13} {'images/s':>9} {'ms/image':>10} {'steps':>7} {'vs plain':>9}", flush=True)
    base = _median(runs["plain"])
    for kind, measured in runs.items():
        m = _median(measured)
        print(f"{kind:<13} {m.images_per_s:9.3f} {m.seconds / m.images * 1000:10.2f} {m.steps:7d} "
              f"{base.images_per_s / m.images_per_s:9.2f}", flush=True)
    print("regions: a kept cell before the last regenerated one still takes a step (bottom half: the kept top); "
          "kept cells after it take none (top half: the kept bottom)", flush=True)


def parse_workload(text: str) -> tuple[int, int]:
    """'4x4' -> (4 requests, 4 images each)."""
    requests, _, images = text.lower().partition("x")
    return int(requests), int(images)


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first problem with the arguments, as a sentence, or None."""
    if args.preset not in PRESETS:
        return f"Unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}."
    if args.tokens is not None and (args.tokens < 1 or math.isqrt(args.tokens) ** 2 != args.tokens):
        return f"--tokens must be a square number of tokens (16, 64, 144, 576 ...); you gave {args.tokens}."
    if args.repeat is not None and args.repeat < 1:
        return f"--repeat must be at least 1; you gave {args.repeat}."
    if not 1 <= args.images <= 16 or args.requests < 1:
        return "--images must be from 1 to 16 and --requests at least 1."
    if args.serving and args.regions:
        return "--regions measures the engine alone; leave out --serving."
    if args.quantize != "none" and (args.serving or args.regions):
        return "--quantize measures the engine alone against itself unquantized; leave out --serving and --regions."
    if args.serving and args.workload:
        return "--serving runs one workload; give it with --requests and --images."
    if args.preview_every is not None and (args.preview_every < 0 or not args.serving):
        return "--preview-every goes with --serving and is 0 (no previews) or more steps."
    if args.describe is not None and (args.describe < 1 or not args.serving):
        return "--describe goes with --serving and is 1 or more describe jobs."
    for text in args.workload or []:
        try:
            requests, images = parse_workload(text)
        except ValueError:
            return f"A workload is REQUESTSxIMAGES, like 4x4; you gave {text!r}."
        if not 1 <= images <= 16 or requests < 1:
            return f"Workload {text}: images must be from 1 to 16 and requests at least 1."
    return None
