"""Weight-only int8 and int4 of the language model's linear layers (generator.quantize) on the tiny checkpoint,
on CPU: the engine's quantized step against the unquantized model, its own step against transformers' forward
on the same quantized layers, the bytes they take, the sentences for modes a device cannot run, and the option
through `imagine` and `python -m generator serve`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generator import protocol as wire
from generator.checkpoint import CheckpointError, load_checkpoint
from generator.engine import Engine, Request, generate
from generator.llama_step import LlamaStep
from generator.quantize import is_quantized, quantized_share, unsupported
from janus_bot.cli import main
from tests.generator.test_engine import assert_own_step_equals_transformers, finished
from tests.generator.test_server import Server

PROMPTS = ["a lighthouse at dusk", "red", "two small yellow squares in the top left corner on a blue background"]
MODES = ["int8", "int4"]


@pytest.fixture(scope="module", params=MODES)
def quantized(request: pytest.FixtureRequest, tiny_dir: Path):
    """The tiny checkpoint loaded on CPU in fp32 with its language model's layers in one mode."""
    return load_checkpoint(tiny_dir, device="cpu", quantize=request.param)


# What rounding the weights may move, measured on the tiny checkpoint's random weights with guidance 5 (which
# multiplies the conditional/unconditional difference): greedy tokens run free, the share of the 6 images x 36
# steps equal to the unquantized model's (int8 0.90, int4 0.77 measured); and the guided logits teacher-forced
# on the unquantized greedy tokens, mean and largest absolute error (int8 0.006 and 0.029, int4 0.095 and 0.49
# measured, against logits whose standard deviation is 0.51). The bounds leave room for other CPUs' kernels.
TOLERANCES = {"int8": (0.8, 0.02, 0.1), "int4": (0.6, 0.2, 1.0)}  # equal share at least, mean and max error at most


def test_quantized_step_agrees_with_the_unquantized_model(tiny, quantized):
    """Weight-only rounding moves the logits a little: greedy tokens equal for most steps, and the teacher-forced
    guided logits within the TOLERANCES above of the unquantized model's (int8 tighter than int4)."""
    least_equal, mean_error, max_error = TOLERANCES[quantized.quantize]
    requests = [Request(p, num_images=2, cfg=5.0, temperature=0, id=str(i)) for i, p in enumerate(PROMPTS)]
    base = generate(tiny, requests, record_logits=True)
    free = generate(quantized, requests)
    forced = [dataclasses.replace(r, prefix=b.tokens, id=f"{r.id}-forced") for r, b in zip(requests, base)]
    taught = generate(quantized, forced, record_logits=True)
    tokens = torch.cat([b.tokens for b in base])  # [images, T]
    equal = (torch.cat([f.tokens for f in free]) == tokens).float().mean().item()
    error = (torch.cat([t.logits for t in taught]) - torch.cat([b.logits for b in base])).abs()
    assert equal >= least_equal
    assert 0 < error.mean().item() <= mean_error  # above 0: the layers really are quantized
    assert error.max().item() <= max_error


def test_own_decode_step_equals_transformers_forward_on_quantized_layers(quantized):
    """The engine's own step (Q/K/V and gate/up stacked for int8, separate GEMMs for int4; residuals added after
    the quantized output GEMMs) computes what transformers' modules do with the same quantized weights."""
    assert_own_step_equals_transformers(quantized, atol=1e-4)


def test_the_compiled_step_on_int8_layers_computes_what_the_eager_one_does(tiny_dir):
    """torch.compile traces through torchao's tensors (its on-disk cache cannot hash them and is bypassed, with a
    warning; the compile itself works)."""
    quantized = load_checkpoint(tiny_dir, device="cpu", quantize="int8")
    runs = []
    for compile_ in (False, True):
        engine = Engine(quantized, max_batch_images=2, record_logits=True, compile=compile_)
        assert engine.decode_path == ("own step, compiled" if compile_ else "own step")
        with torch.inference_mode():
            engine.add([Request(PROMPTS[0], 2, seed=5, id="a")])
            runs.append(finished(engine)["a"])
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    torch.testing.assert_close(runs[0].logits, runs[1].logits, atol=1e-4, rtol=0)


def test_int8_stacks_qkv_and_gate_up_once_and_int4_keeps_them_apart(quantized):
    lm = quantized.model.model.language_model
    attn = lm.layers[0].self_attn
    qkv, _ = LlamaStep(lm).weights[0]
    if quantized.quantize == "int8":  # one quantized tensor whose row views are the modules' weights
        assert is_quantized(qkv) and qkv.shape[0] == sum(p.out_features for p in (attn.q_proj, attn.k_proj,
                                                                                   attn.v_proj))
        assert attn.k_proj.weight.qdata.untyped_storage().data_ptr() == qkv.qdata.untyped_storage().data_ptr()
    else:
        assert isinstance(qkv, tuple) and all(is_quantized(w) for w in qkv)
    names = {name for name, _ in quantized.model.named_parameters(remove_duplicate=False)}
    assert not any("fused_with" in name for name in names)  # the stack is no parameter of its own: counted once


@pytest.mark.parametrize(("mode", "at_most"), [("int8", 0.55), ("int4", 0.35)])
def test_quantized_layers_take_a_fraction_of_their_bf16_bytes(tiny_dir, mode, at_most):
    share = quantized_share(load_checkpoint(tiny_dir, device="cpu", quantize=mode).model.model.language_model)
    assert share.layers == share.total_layers == 2 * 7  # every attention and MLP projection of both layers
    assert share.ratio <= at_most


def test_a_mode_a_device_cannot_run_is_one_sentence_naming_the_one_that_can(monkeypatch, tiny_dir):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(unsupported(mode, cpu, dtype) is None for mode in wire.QUANTIZE_MODES
               for dtype in (torch.float32, torch.bfloat16))
    assert unsupported("none", torch.device("mps"), torch.float16) is None
    assert unsupported("int8", torch.device("mps"), torch.float16) == (
        "--quantize int8 runs on cpu and cuda only; on mps use --quantize none.")
    assert unsupported("int3", cpu, torch.float32) == "Unknown --quantize 'int3'; use one of: none, int8, int4."
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert unsupported("int4", cuda, torch.bfloat16) == (
        "--quantize int4 needs a GPU of compute capability 8.0 or newer (this one is 7.5); use --quantize int8 here.")
    assert unsupported("int8", cuda, torch.float16) is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert unsupported("int4", cuda, torch.float16) == (
        "--quantize int4 runs in bf16 on a GPU, not float16; use --dtype bf16, or --quantize int8 in this dtype.")
    with pytest.raises(CheckpointError, match=r"^Unknown --quantize 'int3'; use one of: none, int8, int4\.$"):
        load_checkpoint(tiny_dir, device="cpu", quantize="int3")  # refused before anything loads


def test_imagine_quantize_int8_end_to_end(tiny_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["imagine", "a lighthouse at dusk", "--model", str(tiny_dir), "-n", "1", "--quantize", "int8",
                 "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit) as exit_:
        main(["imagine", "red", "--model", str(tiny_dir), "--quantize", "int3"])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("janus-bot imagine: error: argument --quantize: invalid choice: 'int3'")


def test_imagine_on_a_device_without_the_mode_is_one_sentence_and_exit_2(tiny_dir, tmp_path, monkeypatch, capsys):
    sentence = ("--quantize int4 needs a GPU of compute capability 8.0 or newer (this one is 7.5); "
                "use --quantize int8 here.")
    monkeypatch.setattr("generator.checkpoint.unsupported", lambda mode, device, dtype: sentence)  # as on a T4
    assert main(["imagine", "red", "--model", str(tiny_dir), "--quantize", "int4", "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"janus-bot: error: {sentence}"]


def test_generator_serve_with_int8_answers_a_generate(tiny_dir):
    server = Server(tiny_dir, "--max-batch-images", "2", "--preview-every", "0", "--quantize", "int8")
    try:
        ready = server.next()
        assert isinstance(ready, wire.Ready), server.proc.stderr.read().decode() if server.proc.stderr else ""
        server.send(wire.Generate("q1", "red", count=1, cfg=5.0, temperature=1.0, seed=1))
        events = server.until_final("q1")
        assert isinstance(events[-1], wire.JobDone) and len(events[-1].images) == 1
    finally:
        server.proc.kill()
        server.proc.wait()
    assert "(language model layers int8)" in (server.proc.stderr.read().decode() if server.proc.stderr else "")


def test_generator_serve_refuses_an_unknown_mode_in_one_line(tiny_dir):
    proc = subprocess.run([sys.executable, "-m", "generator", "serve", "--model", str(tiny_dir), "--quantize",
                           "int3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'int3'" in proc.stderr
