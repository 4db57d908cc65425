"""`janus-bot plan`: its numbers from a config alone against what the engine loads and allocates for the small
presets on CPU, and the command end to end."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generator import slots
from generator.bench_quantize import weight_bytes
from generator.checkpoint import load_checkpoint, load_config
from generator.engine import Engine
from generator.plan import CUDA_CONTEXT, GIB, PROMPT_TOKENS, architecture, plan_memory
from generator.presets import make_model
from janus_bot.cli import main


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("small"), "small", seed=0)


@pytest.fixture(scope="module", params=["tiny", "small"])
def checkpoint_dir(request: pytest.FixtureRequest, tiny_dir: Path, small_dir: Path) -> Path:
    return tiny_dir if request.param == "tiny" else small_dir


def test_a_slot_keeps_the_engine_s_default_prompt_positions():
    assert inspect.signature(Engine).parameters["max_prompt_tokens"].default == PROMPT_TOKENS


@pytest.mark.parametrize("mode", ["none", "int8", "int4"])
def test_plan_s_weights_are_the_bytes_the_loaded_model_holds(checkpoint_dir, mode):
    checkpoint = load_checkpoint(checkpoint_dir, device="cpu", quantize=mode)
    arch = architecture(load_config(checkpoint_dir), checkpoint.dtype)
    assert arch.weights(mode, "cpu").total == weight_bytes(checkpoint)


def test_plan_s_kv_cache_and_slots_are_what_the_engine_allocates(checkpoint_dir, monkeypatch):
    """The engine, told a card's free and total memory, sizes its batch as plan does for that card, and its
    KV cache is that many of plan's slots; plan's free memory before loading is the engine's plus the weights."""
    checkpoint = load_checkpoint(checkpoint_dir, device="cpu")
    arch = architecture(load_config(checkpoint_dir), checkpoint.dtype)
    per_image = arch.kv_per_image()
    assert Engine(checkpoint, max_batch_images=3).cache.nbytes == 3 * per_image
    weights = arch.weights("none", "cpu").total
    total = 8 * GIB
    for images in (1, 5, 64):
        free = slots.margin_bytes(total) + images * per_image + per_image // 2  # after loading, as the engine sees
        monkeypatch.setattr(slots, "device_memory", lambda device, free=free: (free, total))
        plan = plan_memory(arch, "none", total, free + weights, device_type="cpu")
        engine = Engine(checkpoint)
        assert plan.images == engine.max_batch_images == images
        assert engine.cache.nbytes == plan.images * plan.kv_per_image
    free = slots.margin_bytes(total) + per_image - 1  # not even one slot: plan says no, the engine tries one
    assert plan_memory(arch, "none", total, free + weights, device_type="cpu").images == 0
    monkeypatch.setattr(slots, "device_memory", lambda device: (free, total))
    assert Engine(checkpoint).max_batch_images == 1


def test_a_checkpoint_directory_plans_as_its_preset(tiny_dir, capsys):
    assert main(["plan", "--model", str(tiny_dir), "--gpu-memory", "8"]) == 0
    directory = capsys.readouterr().out.splitlines()
    assert main(["plan", "--model", "tiny", "--gpu-memory", "8"]) == 0
    preset = capsys.readouterr().out.splitlines()
    assert directory[1:] == preset[1:] and directory[0] != preset[0]  # only the name differs


def test_plan_janus_pro_7b_offline_through_the_cli():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "janus_bot", "plan", "--model", "janus-pro-7b", "--gpu-memory", "8",
                           "24"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "preset janus-pro-7b" in out and "6.9" in out.splitlines()[0]  # billions of parameters
    tables = out.split("--quantize ")[1:]
    assert [t.split(":")[0] for t in tables] == ["none", "int8", "int4"]
    assert "8 GB" in tables[0] and "no: " in tables[0].split("8 GB")[1].splitlines()[0]  # bf16 7B: not on 8 GB
    slots_24 = [int(t.split("24 GB")[1].split("GiB")[2].split()[0]) for t in tables]  # image slots on 24 GB
    assert 0 < slots_24[0] < slots_24[1] < slots_24[2]  # smaller weights, more slots


def test_plan_s_figures_for_a_given_card(capsys):
    arch = architecture(load_config_of("janus-pro-1b"))
    plan = plan_memory(arch, "int8", 24 * GIB)
    assert plan.free == 24 * GIB - CUDA_CONTEXT - plan.weights.total
    assert plan.images == min(64, (plan.free - plan.margin) // plan.kv_per_image)
    assert plan.weights.ratio <= 0.55 and plan_memory(arch, "int4", 24 * GIB).weights.ratio <= 0.35


def load_config_of(preset: str):
    from generator.plan import _config

    return _config(preset)[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu-memory", "0"], "--gpu-memory is a card's memory in GB, more than 0 (8, 24, 80 ...)."),
    (["--model", "./no/such/dir"], "(Or a preset: tiny, small, janus-pro-1b, janus-pro-7b.)"),
])
def test_bad_input_is_one_sentence_and_exit_2(args, message, capsys):
    assert main(["plan", *args]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("janus-bot: error: ") and line.endswith(message)


def test_plan_loads_no_weights():
    before = torch.get_default_dtype()
    arch = architecture(load_config_of("small"))
    assert all(p.device.type == "meta" for p in arch.model.parameters()) and torch.get_default_dtype() == before
