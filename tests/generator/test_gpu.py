"""The CUDA fast path: bf16, CUDA-graph decoding. Runs only where CUDA is present."""

from __future__ import annotations

import pytest
import torch

from generator.checkpoint import load_checkpoint
from generator.engine import Engine, Request, generate

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def tiny_cuda(tiny_dir):
    return load_checkpoint(tiny_dir)  # cuda, bf16 by default


def test_cuda_defaults_to_bf16(tiny_cuda):
    assert tiny_cuda.device.type == "cuda" and tiny_cuda.dtype == torch.bfloat16


def test_cuda_graph_decoding_matches_eager_and_is_batch_invariant(tiny_cuda):
    request = Request("a lighthouse at dusk", 2, seed=5)
    [eager] = generate(tiny_cuda, [Request(**{**request.__dict__, "id": "eager"})])
    engine = Engine(tiny_cuda, max_batch_images=4, compile=True)
    assert engine.static
    done = {}
    with torch.inference_mode():
        engine.add([Request("red", 2, seed=1), request])
        while engine.busy:
            done.update({r.request.id: r.tokens for r in engine.step()})
    assert torch.equal(done[request.id], eager.tokens)


def test_batch_size_is_derived_from_free_memory(tiny_cuda):
    assert Engine(tiny_cuda, compile=False).max_batch_images >= 1
