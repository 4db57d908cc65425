from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from generator.checkpoint import Checkpoint
from generator.engine import Engine, Request, RequestError, Result, generate
from generator.llama_step import LlamaStep, fused_weight
from generator.reference import reference_generate
from generator.sampling import image_key, sample, uniform

PROMPTS = ["a lighthouse at dusk", "red", "two small yellow squares in the top left corner on a blue background"]


def finished(engine: Engine) -> dict[str, Result]:
    """Step until every running request has finished; results by request id."""
    done = {}
    while engine.busy:
        done.update((result.request.id, result) for result in engine.step())
    return done


def _run(engine: Engine) -> dict[str, torch.Tensor]:
    return {rid: result.tokens for rid, result in finished(engine).items()}


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_greedy_single_prompt_matches_reference(tiny, cfg):
    ref = reference_generate(tiny, PROMPTS[0], 2, cfg=cfg, temperature=0)
    [result] = generate(tiny, [Request(PROMPTS[0], num_images=2, cfg=cfg, temperature=0)])
    assert torch.equal(result.tokens, ref.tokens)


def test_greedy_prompts_of_different_lengths_batched_match_reference(tiny):
    settings = [(PROMPTS[0], 2, 5.0), (PROMPTS[1], 1, 1.0), (PROMPTS[2], 3, 5.0)]
    results = generate(tiny, [Request(p, num_images=n, cfg=w, temperature=0) for p, n, w in settings])
    lengths = {len(tiny.processor.tokenizer(p).input_ids) for p in PROMPTS}
    assert len(lengths) == 3  # the batch really is left-padded
    for (prompt, n, cfg), result in zip(settings, results):
        ref = reference_generate(tiny, prompt, n, cfg=cfg, temperature=0)
        assert torch.equal(result.tokens, ref.tokens), prompt


def test_teacher_forced_guided_logits_match_reference(tiny):
    n_tok = tiny.num_image_tokens
    forced = [torch.randint(0, 256, (2, n_tok), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    requests = [
        Request(PROMPTS[2], num_images=2, cfg=5.0, temperature=0, prefix=forced[0]),
        Request(PROMPTS[1], num_images=2, cfg=3.0, temperature=1.0, prefix=forced[1]),
    ]
    results = generate(tiny, requests, record_logits=True)
    for request, result, tokens in zip(requests, results, forced):
        ref = reference_generate(tiny, request.prompt, 2, cfg=request.cfg, forced=tokens, record_logits=True)
        assert torch.equal(result.tokens, tokens)
        assert result.logits.shape == ref.logits.shape == (2, n_tok, 256)
        torch.testing.assert_close(result.logits, ref.logits, atol=1e-4, rtol=0)


def assert_own_step_equals_transformers(checkpoint: Checkpoint, atol: float) -> None:
    """The engine's own decode step against transformers' forward of the same modules: same tokens, and the
    logits within `atol`."""
    requests = [Request(PROMPTS[2], 2, seed=3, id="a"), Request(PROMPTS[1], 1, cfg=3.0, seed=4, id="b")]
    runs = []
    for own in (True, False):
        engine = Engine(checkpoint, max_batch_images=3, record_logits=True)
        assert engine.graphs.step is not None  # the own step covers the checkpoint's layers
        if not own:
            engine.graphs.step = None
        with torch.inference_mode():
            engine.add(requests)
            runs.append(finished(engine))
    for rid in ("a", "b"):
        assert torch.equal(runs[0][rid].tokens, runs[1][rid].tokens)
        torch.testing.assert_close(runs[0][rid].logits, runs[1][rid].logits, atol=atol, rtol=0)


def test_own_decode_step_equals_transformers_forward(tiny):
    assert_own_step_equals_transformers(tiny, atol=1e-5)  # the tiny model is a plain Llama


def test_fused_weights_are_the_modules_own_memory_stacked_once():
    torch.manual_seed(0)
    linears = [torch.nn.Linear(8, rows, bias=False) for rows in (3, 5, 2)]
    x = torch.randn(4, 8)
    weights, outputs = [lin.weight.detach().clone() for lin in linears], [lin(x) for lin in linears]
    fused = fused_weight(*linears)
    assert torch.equal(fused, torch.cat(weights))
    for linear, part, want in zip(linears, fused.split([3, 5, 2]), outputs):
        assert linear.weight.data_ptr() == part.data_ptr()  # a view: no second copy of the weights
        torch.testing.assert_close(linear(x), want)  # the modules compute what they did
    again = fused_weight(*linears)
    assert again.data_ptr() == fused.data_ptr() and torch.equal(again, fused)
    fused.mul_(2)  # one memory: a change through either side shows in the other
    assert torch.equal(linears[1].weight, 2 * weights[1])


def test_engines_on_one_model_share_its_weights(tiny):
    attn = tiny.model.model.language_model.layers[0].self_attn
    steps = [LlamaStep(tiny.model.model.language_model) for _ in range(2)]
    assert steps[0].weights[0][0].data_ptr() == steps[1].weights[0][0].data_ptr() == attn.q_proj.weight.data_ptr()
    assert attn.v_proj.weight.data_ptr() == steps[1].weights[0][0][2 * attn.q_proj.out_features :].data_ptr()


@pytest.mark.parametrize("built_in_inference_mode", [False, True])
def test_the_own_step_serves_a_model_built_in_or_out_of_inference_mode(built_in_inference_mode):
    from generator.presets import PRESETS, build_model

    with torch.inference_mode(built_in_inference_mode):
        model, processor = build_model(PRESETS["tiny"], seed=2)
    checkpoint = Checkpoint(model, processor, "tiny")
    with torch.inference_mode():  # the engine, and its fused weights, made in inference mode
        [result] = generate(checkpoint, [Request(PROMPTS[0], 2, temperature=0)])
    assert torch.equal(result.tokens, reference_generate(checkpoint, PROMPTS[0], 2, temperature=0).tokens)


def test_a_language_model_the_own_step_does_not_cover_decodes_through_transformers(caplog):
    import dataclasses
    import logging

    from generator.presets import PRESETS, build_model

    model, processor = build_model(dataclasses.replace(PRESETS["tiny"], kv_heads=2), seed=1)
    checkpoint = Checkpoint(model, processor, "tiny with grouped-query attention")
    with caplog.at_level(logging.INFO, logger="generator.engine"):
        [result] = generate(checkpoint, [Request(PROMPTS[0], 2, temperature=0)])
    assert "does not cover grouped-query attention" in caplog.text
    assert Engine(checkpoint, max_batch_images=1).decode_path == "transformers' forward"
    assert torch.equal(result.tokens, reference_generate(checkpoint, PROMPTS[0], 2, temperature=0).tokens)


def _forced_run(engine: Engine, tiny) -> dict[str, Result]:
    """Two requests teacher-forced through the whole image, guided logits recorded."""
    n_tok = tiny.num_image_tokens
    forced = [torch.randint(0, 256, (2, n_tok), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.inference_mode():
        engine.add([Request(PROMPTS[2], 2, cfg=5.0, prefix=forced[0], id="a"),
                    Request(PROMPTS[1], 2, cfg=3.0, prefix=forced[1], id="b")])
        return finished(engine)


def test_compiled_step_computes_what_the_eager_step_does(tiny, caplog):
    import logging

    eager = _forced_run(Engine(tiny, max_batch_images=4, record_logits=True), tiny)
    with caplog.at_level(logging.INFO, logger="generator.graphs"):
        engine = Engine(tiny, max_batch_images=4, record_logits=True, compile=True)
    assert "decode step compiled by torch.compile" in caplog.text
    assert engine.decode_path == "own step, compiled"
    compiled = _forced_run(engine, tiny)
    for rid in ("a", "b"):
        torch.testing.assert_close(compiled[rid].logits, eager[rid].logits, atol=1e-4, rtol=0)


def test_one_compile_serves_every_batch_size_and_cache_length(tiny):
    engine = Engine(tiny, max_batch_images=32, compile=True)  # warmed up at 64 rows and 64 cache positions
    with torch.inference_mode(), torch._dynamo.config.patch(error_on_recompile=True):
        engine.add([Request(PROMPTS[0], 1, seed=1), Request(PROMPTS[2], 3, seed=2)])
        engine.step()  # 8 rows
        engine.add([Request(PROMPTS[1], 2, seed=3)])
        assert len(finished(engine)) == 3  # 12 rows, then fewer as requests finish; lengths growing


def test_a_step_that_will_not_compile_falls_back_to_eager_in_one_line(tiny, caplog, monkeypatch):
    def broken(fn, **options):
        def call(*args, **kwargs):
            raise RuntimeError("inductor: no C++ compiler found\n(a long traceback)")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    eager = _forced_run(Engine(tiny, max_batch_images=4, record_logits=True), tiny)
    engine = Engine(tiny, max_batch_images=4, record_logits=True, compile=True)
    assert "torch.compile unavailable (inductor: no C++ compiler found); decoding eagerly" in caplog.text
    assert engine.decode_path == "own step"
    fallen_back = _forced_run(engine, tiny)
    for rid in ("a", "b"):
        assert torch.equal(fallen_back[rid].logits, eager[rid].logits)


def test_same_seed_same_images_and_different_seed_different(tiny):
    a, b, c = generate(tiny, [Request(PROMPTS[0], 4, seed=7), Request(PROMPTS[0], 4, seed=7),
                              Request(PROMPTS[0], 4, seed=8)])
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert len({tuple(row.tolist()) for row in a.tokens}) == 4  # each image of a request has its own stream


def test_request_alone_equals_request_batched_with_others(tiny):
    target = Request(PROMPTS[0], num_images=3, cfg=4.0, temperature=1.0, seed=1234)
    [alone] = generate(tiny, [target])
    others = [Request(PROMPTS[2], 5, seed=1), Request(PROMPTS[1], 2, cfg=1.0, temperature=0.5, seed=2)]
    together = generate(tiny, [others[0], Request(**{**target.__dict__, "id": "again"}), others[1]])
    assert torch.equal(alone.tokens, together[1].tokens)


def test_temperature_zero_ignores_seed(tiny):
    a, b = generate(tiny, [Request(PROMPTS[0], 2, temperature=0, seed=1), Request(PROMPTS[0], 2, temperature=0,
                                                                                   seed=99)])
    assert torch.equal(a.tokens, b.tokens)


def test_prefix_forces_first_tokens_then_samples(tiny):
    prefix = torch.tensor([5, 6, 7, 8, 9, 10])
    [result] = generate(tiny, [Request(PROMPTS[0], 3, seed=3, prefix=prefix)])
    assert torch.equal(result.tokens[:, :6], prefix.expand(3, -1))
    assert len({tuple(row.tolist()) for row in result.tokens[:, 6:]}) == 3


def test_progress_reports_every_step_and_partial_grids(tiny):
    events = []
    generate(tiny, [Request(PROMPTS[0], 2)], preview_every=12, on_progress=events.append)
    assert [e.step for e in events] == list(range(1, tiny.num_image_tokens + 1))
    partial = [e for e in events if e.tokens is not None]
    assert [e.step for e in partial] == [12, 24]
    assert partial[1].tokens.shape == (2, 24)


def test_request_joining_mid_run_gets_the_same_tokens(tiny):
    late = Request(PROMPTS[1], 2, seed=5)
    [alone] = generate(tiny, [Request(**{**late.__dict__, "id": "alone"})])
    engine = Engine(tiny, max_batch_images=4)
    with torch.inference_mode():
        engine.add([Request(PROMPTS[2], 2, seed=6)])
        for _ in range(10):
            engine.step()
        engine.add([late])
        done = _run(engine)
    assert torch.equal(done[late.id], alone.tokens)


def test_cancel_frees_slots_and_leaves_others_untouched(tiny):
    keep = Request(PROMPTS[0], 2, seed=11)
    [alone] = generate(tiny, [Request(**{**keep.__dict__, "id": "alone"})])
    engine = Engine(tiny, max_batch_images=4)
    with torch.inference_mode():
        doomed = Request(PROMPTS[2], 2, seed=12)
        engine.add([doomed, keep])
        engine.step()
        assert engine.free_images == 0
        result = engine.cancel(doomed.id)
        assert result.status == "cancelled" and result.tokens is None
        assert engine.free_images == 2
        done = _run(engine)
    assert list(done) == [keep.id]
    assert torch.equal(done[keep.id], alone.tokens)


@pytest.mark.parametrize(
    "request_, message",
    [
        (Request("   "), "empty"),
        (Request("x", num_images=0), "between 1 and"),
        (Request("x", num_images=9), "between 1 and"),
        (Request("x", cfg=float("nan")), "guidance"),
        (Request("x", temperature=-1), "temperature"),
        (Request("word " * 80), "too long"),
    ],
)
def test_invalid_requests_are_refused_with_a_sentence(tiny, request_, message):
    engine = Engine(tiny, max_batch_images=8, max_prompt_tokens=64)
    with pytest.raises(RequestError, match=message):
        engine.add([request_])
    assert engine.free_images == 8


def test_sampling_draws_the_softmax_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    n = 20000
    keys = torch.tensor([image_key(seed, 0) for seed in range(n)])
    tokens = sample(logits.expand(n, -1), torch.full((n,), 0.7), uniform(keys, torch.zeros(n, dtype=torch.long)))
    freq = torch.bincount(tokens, minlength=4).float() / n
    expected = torch.softmax(logits[0] / 0.7, dim=-1)
    torch.testing.assert_close(freq, expected, atol=0.012, rtol=0)


@pytest.mark.parametrize("u", [1.0, 2.0**-24])
def test_sampling_never_draws_a_token_of_probability_zero(u):
    logits = torch.tensor([[-math.inf, 0.0, 3.0, -math.inf], [-200.0, 1.0, 1.0, 150.0]])
    tokens = sample(logits, torch.ones(2), torch.full((2,), u))
    assert tokens.tolist() == ([2, 3] if u == 1.0 else [1, 3])  # all but the largest logit of row 2 underflow to 0


def test_uniform_is_a_pure_function_of_key_and_step():
    keys = torch.tensor([image_key(1, 0), image_key(1, 1), image_key(2, 0)])
    steps = torch.tensor([0, 0, 0])
    a = uniform(keys, steps)
    b = uniform(keys[[2, 0]], steps[:2])
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert len(set(a.tolist())) == 3
    assert not torch.equal(a[0], uniform(keys[:1], torch.tensor([1]))[0])
    many = uniform(torch.tensor([image_key(s, 0) for s in range(4000)]), torch.zeros(4000, dtype=torch.long))
    assert many.min() > 0 and many.max() <= 1 and abs(many.mean().item() - 0.5) < 0.02


def test_transformers_generate_agrees_with_the_engine_when_greedy(tiny):
    from generator.prompt import format_prompt

    inputs = tiny.processor(text=format_prompt(tiny.processor, PROMPTS[0]), generation_mode="image",
                            return_tensors="pt")
    hf = tiny.model.generate(**inputs, generation_mode="image", do_sample=False, guidance_scale=5.0)
    [ours] = generate(tiny, [Request(PROMPTS[0], 1, cfg=5.0, temperature=0)])
    assert torch.equal(hf, ours.tokens)


def _first_norm(tiny) -> torch.nn.Module:
    """The first module every forward runs on its rows, prefill or step, the engine's own step or not."""
    return tiny.model.model.language_model.layers[0].input_layernorm


def _out_of_memory_above(monkeypatch, tiny, step_rows: int, prompt_tokens: int) -> list[int]:
    """Make the language model raise CUDA-style out-of-memory for steps with more rows than allowed, and for
    prefills of more rows x tokens."""
    norm = _first_norm(tiny)
    inner, calls = norm.forward, []

    def forward(hidden):  # [rows, length, H] in transformers' forward, [rows, H] in the own decode step
        n, length = hidden.shape[0], hidden.shape[1] if hidden.dim() == 3 else 1
        calls.append(n)
        if n > step_rows if length == 1 else n * length > prompt_tokens:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return inner(hidden)

    monkeypatch.setattr(norm, "forward", forward)
    return calls


def test_out_of_memory_in_a_step_splits_it_and_changes_no_tokens(tiny, monkeypatch, caplog):
    requests = [Request(PROMPTS[i % 3], 2, seed=i) for i in range(3)]
    expected = generate(tiny, [Request(**{**r.__dict__, "id": f"alone{i}"}) for i, r in enumerate(requests)])
    engine = Engine(tiny, max_batch_images=6)
    calls = _out_of_memory_above(monkeypatch, tiny, step_rows=4, prompt_tokens=10_000)
    with torch.inference_mode():
        assert engine.add(requests) == []
        done = _run(engine)
    assert 12 in calls and calls.count(4) > 0  # full steps failed, halves (2 images = 4 rows) ran
    for request, want in zip(requests, expected):
        assert torch.equal(done[request.id], want.tokens)
    assert "splitting it in two" in caplog.text


def test_out_of_memory_prefilling_fails_only_the_request_that_cannot_fit(tiny, monkeypatch):
    small, big = Request(PROMPTS[0], 1, seed=1), Request(PROMPTS[2], 4, seed=2)
    [want] = generate(tiny, [Request(**{**small.__dict__, "id": "alone"})])
    engine = Engine(tiny, max_batch_images=6)
    fits = 2 * len(engine.validate(small).cond)  # the small request's two prompt rows, and no more
    calls = _out_of_memory_above(monkeypatch, tiny, step_rows=100, prompt_tokens=fits)
    with torch.inference_mode():
        failed = engine.add([small, big])
        assert calls == [4, 2, 2]  # two rows a request however many images: together, then one by one
        assert [(r.request.id, r.status) for r in failed] == [(big.id, "failed")]
        assert "out of memory" in failed[0].error and "\n" not in failed[0].error
        assert engine.free_images == 5
        done = _run(engine)
    assert torch.equal(done[small.id], want.tokens)


def test_an_image_that_cannot_fit_even_alone_fails_its_request_only(tiny, monkeypatch):
    keep, doomed = Request(PROMPTS[0], 1, seed=1), Request(PROMPTS[1], 1, seed=2)
    [want] = generate(tiny, [Request(**{**keep.__dict__, "id": "alone"})])
    engine = Engine(tiny, max_batch_images=2)
    with torch.inference_mode():
        engine.add([keep, doomed])
        norm = _first_norm(tiny)
        inner = norm.forward

        def forward(hidden):  # the second image slot always runs out of memory
            if hidden.shape[0] == 4 or engine.cache._start == 2:
                raise torch.OutOfMemoryError("CUDA out of memory.")
            return inner(hidden)

        monkeypatch.setattr(norm, "forward", forward)
        finished = engine.step()
        assert [(r.request.id, r.status) for r in finished] == [(doomed.id, "failed")]
        done = _run(engine)
    assert torch.equal(done[keep.id], want.tokens)


def test_static_shapes_cover_every_batch_in_few_shapes(tiny):
    engine = Engine(tiny, max_batch_images=6, max_prompt_tokens=100, graphs=True)
    assert engine.graphs.static and engine.max_len == 136
    assert engine.graphs.shapes() == [(s, k) for s in (6, 4, 2, 1) for k in (136, 128, 64)]


def test_static_shape_steps_match_exact_shape_steps(tiny):
    """Static steps run free slots and empty cache blocks along; the tokens must not notice.

    A long prompt crosses a cache block, a late joiner grows the slot count, a cancel leaves a hole.
    """
    long_prompt = " ".join(["a tiny red house beside a green tree"] * 5)
    requests = [Request(long_prompt, 2, seed=3), Request(PROMPTS[1], 1, seed=4), Request(PROMPTS[0], 2, seed=5)]
    done = {}
    for graphs in (False, True):
        engine = Engine(tiny, max_batch_images=5, graphs=graphs)
        assert engine.graphs.static is graphs
        with torch.inference_mode():
            engine.add([Request(**{**r.__dict__, "id": f"{r.id}-{graphs}"}) for r in requests[:2]])
            for _ in range(5):
                engine.step()
            engine.cancel(f"{requests[1].id}-{graphs}")
            engine.add([Request(**{**requests[2].__dict__, "id": f"{requests[2].id}-{graphs}"})])
            done[graphs] = _run(engine)
    assert len(tiny.processor.tokenizer(long_prompt).input_ids) + tiny.num_image_tokens > 64
    for r in (requests[0], requests[2]):
        assert torch.equal(done[True][f"{r.id}-True"], done[False][f"{r.id}-False"])


def test_one_shot_generate_keeps_the_prompt_limit_while_sizing_its_cache_to_the_batch(tiny):
    with pytest.raises(RequestError, match=r"too long \(\d+ tokens, at most 20\)"):
        generate(tiny, [Request("red"), Request("word " * 40)], max_prompt_tokens=20)


def _huge_page_kb(address: int) -> int | None:
    """AnonHugePages of the mapping that holds `address` in this process, in kB (None: not Linux)."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(part, 16) for part in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return None


def test_the_cpu_kv_cache_lives_in_huge_pages_where_the_kernel_allows(tiny):
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("this kernel has no transparent huge pages")
    engine = Engine(tiny, max_batch_images=64, max_prompt_tokens=512)  # megabytes a layer
    keys = engine.cache.keys[0]
    assert keys.nbytes >= 8 << 20 and not keys.any()
    assert _huge_page_kb(keys.data_ptr() + keys.nbytes // 2) >= 2048


# -- negative prompts -------------------------------------------------------------------------------

NEGATIVE = "blurry, dark, a dog"


@pytest.mark.parametrize("cfg", [5.0, 3.0])
def test_a_negative_prompt_matches_a_reference_running_each_row_on_its_own(tiny, cfg):
    requests = [Request(p, num_images=n, cfg=cfg, temperature=0, negative=NEGATIVE) for p, n in zip(PROMPTS, (2, 1, 2))]
    lengths = {len(tiny.processor.tokenizer(text).input_ids) for text in [*PROMPTS, NEGATIVE]}
    assert len(lengths) == 4  # conditional and negative rows of four lengths share the prefill
    results = generate(tiny, requests + [Request(PROMPTS[0], 1, cfg=cfg, temperature=0, id="plain")])
    for request, result in zip(requests, results):
        ref = reference_generate(tiny, request.prompt, request.num_images, cfg=cfg, temperature=0, negative=NEGATIVE)
        assert torch.equal(result.tokens, ref.tokens), request.prompt
    unguided = reference_generate(tiny, PROMPTS[0], 2, cfg=cfg, temperature=0)
    assert not torch.equal(results[0].tokens, unguided.tokens)  # the negative changed something
    assert torch.equal(results[-1].tokens, unguided.tokens[:1])  # and only for the requests that gave it


def test_a_negative_prompt_teacher_forced_gives_the_reference_s_guided_logits(tiny):
    forced = torch.randint(0, 256, (2, tiny.num_image_tokens), generator=torch.Generator().manual_seed(5))
    [result] = generate(tiny, [Request(PROMPTS[1], 2, cfg=3.0, negative=NEGATIVE, forced=forced)], record_logits=True)
    ref = reference_generate(tiny, PROMPTS[1], 2, cfg=3.0, negative=NEGATIVE, forced=forced, record_logits=True)
    torch.testing.assert_close(result.logits, ref.logits, atol=1e-4, rtol=0)


def test_without_a_negative_prompt_the_unconditional_rows_are_as_published(tiny):
    a, b, c = generate(tiny, [Request(PROMPTS[2], 2, seed=4, id="none"), Request(PROMPTS[2], 2, seed=4, negative="  ",
                                                                              id="blank"),
                              Request(PROMPTS[2], 2, seed=4, negative=NEGATIVE, id="neg")])
    assert torch.equal(a.tokens, b.tokens)  # a blank negative is no negative
    assert not torch.equal(a.tokens, c.tokens)
    ref = reference_generate(tiny, PROMPTS[2], 2, temperature=0)
    [greedy] = generate(tiny, [Request(PROMPTS[2], 2, temperature=0)])
    assert torch.equal(greedy.tokens, ref.tokens)


def test_a_negative_prompt_alone_equals_it_batched_with_others(tiny):
    target = Request(PROMPTS[0], 2, cfg=4.0, seed=77, negative=NEGATIVE)
    [alone] = generate(tiny, [target])
    together = generate(tiny, [Request(PROMPTS[2], 3, seed=1), Request(**{**target.__dict__, "id": "again"}),
                               Request(PROMPTS[1], 1, seed=2, negative="green")])
    assert torch.equal(alone.tokens, together[1].tokens)


def test_a_negative_prompt_over_the_token_limit_is_refused(tiny):
    engine = Engine(tiny, max_batch_images=2, max_prompt_tokens=64)
    with pytest.raises(RequestError, match=r"The negative prompt is too long \(\d+ tokens, at most 64\); shorten it"):
        engine.add([Request("red", 1, negative="word " * 80)])
    with pytest.raises(RequestError, match=r"negative prompt is too long \(\d+ tokens, at most 20\)"):
        generate(tiny, [Request("red", negative="word " * 40)], max_prompt_tokens=20)


# -- kept cells of a source grid (image prompts, Vary (Region)) --------------------------------------

REGIONS = {"bottom half": (0.0, 0.5, 1.0, 1.0), "centre": (0.25, 0.25, 0.75, 0.75), "a column": (0.5, 0.0, 0.67, 1.0)}


def _source(tiny, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (tiny.num_image_tokens,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("region", list(REGIONS))
def test_kept_cells_match_a_reference_fed_the_source_codes(tiny, region):
    from generator.codec import region_cells

    source, keep = _source(tiny), ~region_cells(tiny.grid_size, REGIONS[region])
    assert 0 < keep.sum() < tiny.num_image_tokens
    requests = [Request(PROMPTS[0], 2, cfg=5.0, temperature=0, forced=source, keep=keep, id="kept"),
                Request(PROMPTS[2], 1, cfg=3.0, temperature=0, forced=source, keep=keep, negative=NEGATIVE,
                        id="kept-negative")]
    others = [Request(PROMPTS[1], 2, temperature=1.0, seed=3, id="other"), Request(PROMPTS[2], 1, temperature=0,
                                                                                   prefix=source[:9], id="prefix")]
    results = {r.request.id: r for r in generate(tiny, [others[0], *requests, others[1]])}
    for request in requests:
        n = request.num_images
        ref = reference_generate(tiny, request.prompt, n, cfg=request.cfg, temperature=0, negative=request.negative,
                                 forced=source.expand(n, -1), keep=keep.expand(n, -1))
        tokens = results[request.id].tokens
        assert torch.equal(tokens, ref.tokens), request.id
        assert torch.equal(tokens[:, keep], source[keep].expand(n, -1))  # kept cells are the source's
    free = reference_generate(tiny, PROMPTS[0], 2, temperature=0)
    assert not torch.equal(results["kept"].tokens[:, ~keep], free.tokens[:, ~keep])  # the kept cells steer the rest


def test_kept_cells_sampled_alone_equal_them_batched_with_others(tiny):
    from generator.codec import region_cells

    target = Request(PROMPTS[0], 3, cfg=4.0, seed=12, forced=_source(tiny, 1),
                     keep=~region_cells(tiny.grid_size, REGIONS["centre"]))
    [alone] = generate(tiny, [target])
    together = generate(tiny, [Request(PROMPTS[2], 2, seed=1), Request(**{**target.__dict__, "id": "again"}),
                               Request(PROMPTS[1], 2, seed=2, forced=_source(tiny, 2))])
    assert torch.equal(alone.tokens, together[1].tokens)
    assert torch.equal(together[2].tokens, _source(tiny, 2).expand(2, -1))  # every cell kept: the source itself


def test_kept_cells_per_image_and_a_prefix_as_a_mask(tiny):
    n_tok = tiny.num_image_tokens
    grids = torch.stack([_source(tiny, 3), _source(tiny, 4)])
    keep = torch.zeros(2, n_tok, dtype=torch.bool)
    keep[0, :10], keep[1, 20:] = True, True
    as_prefix, as_mask, per_image = generate(tiny, [
        Request(PROMPTS[0], 2, seed=5, prefix=grids[:, :10]),
        Request(PROMPTS[0], 2, seed=5, forced=grids, keep=torch.arange(n_tok) < 10),
        Request(PROMPTS[0], 2, seed=5, forced=grids, keep=keep)])
    assert torch.equal(as_prefix.tokens, as_mask.tokens)  # a variation's prefix is the mask of its first cells
    assert torch.equal(per_image.tokens[0, :10], grids[0, :10]) and torch.equal(per_image.tokens[1, 20:], grids[1, 20:])


def test_a_kept_tail_is_not_stepped_through(tiny):
    from generator.codec import region_cells

    n_tok, grid = tiny.num_image_tokens, tiny.grid_size
    source, keep = _source(tiny, 6), ~region_cells(grid, (0.0, 0.0, 1.0, 0.5))  # the top half regenerated
    steps: list[int] = []
    [result] = generate(tiny, [Request(PROMPTS[2], 2, temperature=0, forced=source, keep=keep)],
                        on_progress=lambda report: steps.append(report.step))
    assert steps == list(range(1, n_tok // 2 + 1))  # the kept bottom half took no steps
    ref = reference_generate(tiny, PROMPTS[2], 2, temperature=0, forced=source.expand(2, -1), keep=keep.expand(2, -1))
    assert torch.equal(result.tokens, ref.tokens)


def test_previews_show_the_kept_cells_from_the_first_step(tiny):
    from generator.codec import region_cells

    source, keep = _source(tiny, 7), ~region_cells(tiny.grid_size, REGIONS["centre"])
    reports = []
    generate(tiny, [Request(PROMPTS[0], 2, forced=source, keep=keep), Request(PROMPTS[1], 1, id="plain")],
             preview_every=12, on_progress=reports.append)
    kept = [r for r in reports if r.tokens is not None and r.request.id != "plain"]
    assert [r.step for r in kept] == [1, 12, 24]
    for report in kept:
        assert torch.equal(report.kept, torch.where(keep, source, -1).expand(2, -1))
    assert [r.step for r in reports if r.tokens is not None and r.request.id == "plain"] == [12, 24]
    assert all(r.kept is None for r in reports if r.request.id == "plain")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"keep": torch.ones(36, dtype=torch.bool)}, "need a grid to start from"),
        ({"forced": torch.zeros(36, dtype=torch.long), "prefix": torch.tensor([1])}, "not both"),
        ({"forced": torch.zeros(35, dtype=torch.long)}, r"must be \[36\] or \[num_images, 36\] codes"),
        ({"forced": torch.zeros(3, 36, dtype=torch.long)}, r"must be \[36\] or \[num_images, 36\] codes"),
        ({"forced": torch.full((36,), 256)}, "from 0 to 255"),
        ({"forced": torch.zeros(36)}, "whole numbers"),
        ({"forced": torch.zeros(36, dtype=torch.long), "keep": torch.ones(36)}, "boolean mask"),
        ({"prefix": torch.tensor([1, -1])}, "from 0 to 255"),
        ({"prefix": torch.tensor([1.5])}, "whole numbers"),
    ],
)
def test_bad_grids_to_start_from_are_refused_with_a_sentence(tiny, fields, message):
    engine = Engine(tiny, max_batch_images=2)
    with pytest.raises(RequestError, match=message):
        engine.add([Request("red", 2, **fields)])
    assert engine.free_images == 2
