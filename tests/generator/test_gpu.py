"""The CUDA fast path: bf16, decode steps captured as CUDA graphs. Runs only where CUDA is present."""

from __future__ import annotations

import pytest
import torch

from generator.checkpoint import load_checkpoint
from generator.engine import Engine, Request, generate
from generator.llama_step import fused_weight

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

REQUESTS = [Request("a lighthouse at dusk", 2, seed=5), Request("red", 1, seed=1), Request("a fox", 1, seed=2)]


@pytest.fixture(scope="module")
def tiny_cuda(tiny_dir):
    return load_checkpoint(tiny_dir)  # cuda, bf16 by default


def _serve(engine: Engine, tag: str) -> dict[str, torch.Tensor]:
    """Two requests, a third joining after a few steps; tokens by request id."""
    done = {}
    with torch.inference_mode():
        engine.add([Request(**{**r.__dict__, "id": f"{r.id}-{tag}"}) for r in REQUESTS[:2]])
        for _ in range(3):
            done.update({r.request.id: r.tokens for r in engine.step()})
        engine.add([Request(**{**REQUESTS[2].__dict__, "id": f"{REQUESTS[2].id}-{tag}"})])
        while engine.busy:
            done.update({r.request.id: r.tokens for r in engine.step()})
    return {key.rsplit("-", 1)[0]: tokens for key, tokens in done.items()}


def test_cuda_defaults_to_bf16_and_graphs(tiny_cuda):
    assert tiny_cuda.device.type == "cuda" and tiny_cuda.dtype == torch.bfloat16
    engine = Engine(tiny_cuda, max_batch_images=4)
    assert engine.graphs.static and len(engine.graphs.captured) == len(engine.graphs.shapes())  # not fallen back


def test_graph_replay_gives_the_tokens_of_the_same_steps_run_eagerly(tiny_cuda):
    replayed = _serve(Engine(tiny_cuda, max_batch_images=4), "graph")
    eager = Engine(tiny_cuda, max_batch_images=4)
    eager.graphs.captured.clear()  # same static shapes, same kernels, launched one by one
    assert replayed.keys() == {r.id for r in REQUESTS}
    for key, tokens in _serve(eager, "eager").items():
        assert torch.equal(replayed[key], tokens), key


def test_decode_step_never_waits_on_the_gpu(tiny_cuda):
    engine = Engine(tiny_cuda, max_batch_images=2, graphs=False)
    with torch.inference_mode():
        engine.add([Request("red", 2, seed=1)])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any device-to-host read raises
        try:
            engine._decode(0, 2, 64)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_request_alone_and_beside_others_mostly_agree_in_bf16(tiny_cuda):
    # Different batch sizes may pick different GEMM kernels, so bf16 rounding can flip a rare token.
    [alone] = generate(tiny_cuda, [Request(**{**REQUESTS[0].__dict__, "id": "alone"})])
    batched = _serve(Engine(tiny_cuda, max_batch_images=4), "graph")[REQUESTS[0].id]
    assert (alone.tokens == batched).float().mean() >= 0.9


def test_batch_size_is_derived_from_free_memory(tiny_cuda):
    assert Engine(tiny_cuda, graphs=False).max_batch_images >= 1


def test_compiled_step_is_captured_and_mostly_agrees_with_the_eager_one(tiny_cuda, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="generator.graphs"):
        compiled = Engine(tiny_cuda, max_batch_images=4, compile=True)
    assert "decode step compiled by torch.compile" in caplog.text
    assert len(compiled.graphs.captured) == len(compiled.graphs.shapes())  # and the compiled step captured as graphs
    assert compiled.decode_path == f"own step, compiled, {len(compiled.graphs.captured)} CUDA graphs"
    fused, eager = _serve(compiled, "compiled"), _serve(Engine(tiny_cuda, max_batch_images=4), "graph")
    for key, tokens in eager.items():  # inductor's fused kernels round bf16 differently now and then
        assert (fused[key] == tokens).float().mean() >= 0.9, key


def test_fusing_projection_weights_leaves_no_gpu_memory_behind():
    # 32 MB weights: each its own allocation, as in a 7B model moved to the GPU tensor by tensor
    linears = [torch.nn.Linear(4096, 4096, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    want = torch.cat([linear.weight.detach() for linear in linears])
    torch.cuda.synchronize()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    fused = fused_weight(*linears)
    assert torch.equal(fused, want)
    assert torch.cuda.memory_allocated() == allocated  # the modules' weights are views of the fused tensor
    assert torch.cuda.memory_reserved() <= reserved  # and the old ones' memory is not kept in torch's cache


def test_a_compiled_step_that_will_not_capture_falls_back_to_graphs_of_the_eager_step(tiny_cuda, caplog, monkeypatch):
    import logging

    real, calls = torch.cuda.graph, []

    def capture_once_failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("operation not permitted when stream is capturing\n(more)")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "graph", capture_once_failing)
    with caplog.at_level(logging.WARNING, logger="generator.graphs"):
        engine = Engine(tiny_cuda, max_batch_images=4, compile=True)
    assert ("CUDA graphs of the compiled step failed (operation not permitted when stream is capturing); "
            "capturing the eager step") in caplog.text
    assert engine.graphs.step is engine.graphs.eager_step and engine.graphs.static
    assert engine.decode_path == f"own step, {len(engine.graphs.shapes())} CUDA graphs"



def test_kept_cells_and_a_negative_prompt_replay_as_graphs_without_a_host_read(tiny_cuda):
    from generator.codec import decode_tokens, encode_pictures, region_cells

    source = torch.randint(0, 256, (36,), generator=torch.Generator().manual_seed(3))
    codes = encode_pictures(tiny_cuda, decode_tokens(tiny_cuda, source[None]))[0]  # the bf16 encoder on the GPU
    assert codes.shape == (36,) and codes.device.type == "cpu"
    keep = ~region_cells(tiny_cuda.grid_size, (0.25, 0.25, 0.75, 0.75))
    requests = [Request("a lighthouse", 2, seed=1, forced=codes, keep=keep, negative="fog", id="kept"),
                Request("red", 1, seed=2, negative="a long negative prompt about many things", id="neg")]
    tokens = {}
    for tag in ("graph", "eager"):
        engine = Engine(tiny_cuda, max_batch_images=4)
        if tag == "eager":
            engine.graphs.captured.clear()  # same static shapes, kernels launched one by one
        with torch.inference_mode():
            engine.add([Request(**{**r.__dict__, "id": f"{r.id}-{tag}"}) for r in requests])
            while engine.busy:
                tokens.update({r.request.id: r.tokens for r in engine.step()})
    assert torch.equal(tokens["kept-graph"][:, keep], codes[keep].expand(2, -1))
    for rid in ("kept", "neg"):
        assert torch.equal(tokens[f"{rid}-graph"], tokens[f"{rid}-eager"]), rid
    engine = Engine(tiny_cuda, max_batch_images=2, graphs=False)
    with torch.inference_mode():
        engine.add([requests[0]])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # kept cells are a mask on the device: no host read
        try:
            engine._decode(0, 2, 64)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_layers_replay_as_graphs_with_the_eager_steps_tokens(tiny_dir, mode):
    if mode == "int4" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("int4 needs compute capability 8.0 (tinygemm)")
    quantized = load_checkpoint(tiny_dir, quantize=mode)  # cuda, bf16
    engine = Engine(quantized, max_batch_images=4)
    assert engine.graphs.static and len(engine.graphs.captured) == len(engine.graphs.shapes())
    replayed = _serve(engine, "graph")
    eager = Engine(quantized, max_batch_images=4)
    eager.graphs.captured.clear()
    for key, tokens in _serve(eager, "eager").items():
        assert torch.equal(replayed[key], tokens), key
