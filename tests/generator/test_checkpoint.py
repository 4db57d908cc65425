from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from generator.checkpoint import CheckpointError, fuse_norms, load_checkpoint
from generator.presets import BOI, PRESETS, build_config, build_model, build_tokenizer
from generator.prompt import encode_prompt, format_prompt, unconditional_ids


def test_saved_checkpoint_has_the_standard_files(tiny_dir):
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= names
    assert json.loads((tiny_dir / "config.json").read_text())["model_type"] == "janus"


def test_loaded_checkpoint_on_cpu_is_fp32_eval(tiny):
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32
    assert not tiny.model.training
    assert (tiny.image_size, tiny.grid_size, tiny.num_image_tokens) == (96, 6, 36)


def test_dtype_is_overridable(tiny_dir):
    assert load_checkpoint(tiny_dir, device="cpu", dtype="bf16").dtype == torch.bfloat16


def test_one_kernel_norms_compute_what_transformers_norms_do():
    model, _ = build_model("tiny", seed=3)
    embeds = torch.randn(2, 7, model.config.text_config.hidden_size)
    with torch.no_grad():
        plain = model.model.language_model(inputs_embeds=embeds).last_hidden_state
        fuse_norms(model)
        fused = model.model.language_model(inputs_embeds=embeds).last_hidden_state
    norms = [m for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    assert len(norms) == 2 * model.config.text_config.num_hidden_layers + 1
    assert all("forward" in vars(m) for m in norms)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    fuse_norms(model, fused=False)
    assert not any("forward" in vars(m) for m in norms)


def test_loaded_checkpoint_runs_one_kernel_norms(tiny):
    norm = tiny.model.model.language_model.norm
    assert norm.forward.__func__.__name__ == "_rms_norm"


def test_prompt_format_matches_janus_conversation(tiny):
    assert format_prompt(tiny.processor, "a red fox") == "<|User|>: a red fox\n\n<|Assistant|>:"
    ids = encode_prompt(tiny.processor, "a red fox")
    tok = tiny.processor.tokenizer
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.convert_tokens_to_ids(BOI)
    assert tok.decode(ids[1:-1]) == "<|User|>: a red fox\n\n<|Assistant|>:"


def test_unconditional_row_keeps_only_bos_and_begin_of_image(tiny):
    ids = encode_prompt(tiny.processor, "a red fox")
    uncond = unconditional_ids(ids, tiny.processor)
    pad = tiny.processor.tokenizer.pad_token_id
    assert uncond[0] == ids[0] and uncond[-1] == ids[-1]
    assert uncond[1:-1] == [pad] * (len(ids) - 2)


@pytest.mark.parametrize(
    ("preset", "layers", "hidden", "heads", "mlp"),
    [("janus-pro-1b", 24, 2048, 16, 5632), ("janus-pro-7b", 30, 4096, 32, 11008)],
)
def test_real_presets_copy_the_published_architectures(preset, layers, hidden, heads, mlp):
    config = build_config(PRESETS[preset], build_tokenizer())
    text = config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.intermediate_size) == (
        layers, hidden, heads, mlp)
    assert text.vocab_size == 102400
    assert (config.vq_config.num_embeddings, config.vq_config.embed_dim) == (16384, 8)
    assert config.vision_config.num_image_tokens == 576


def test_real_preset_builds_in_memory_without_saving():
    model, processor = build_model("janus-pro-7b", device="meta", dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    assert 6.5e9 < params < 8e9
    assert next(model.parameters()).dtype == torch.bfloat16
    assert processor.num_image_tokens == 576


def test_missing_path_is_one_sentence(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory") as info:
        load_checkpoint(tmp_path / "nope")
    assert "\n" not in str(info.value)


def test_directory_without_config_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a Janus checkpoint: it has no config.json"):
        load_checkpoint(tmp_path)


def test_other_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type is 'llama'"):
        load_checkpoint(tmp_path)


def test_hub_id_offline_without_cache_says_so(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="not in the local cache and the hub cannot be reached") as info:
        load_checkpoint("deepseek-community/Janus-Pro-1B")
    assert "\n" not in str(info.value)


def test_download_progress_is_a_log_line_now_and_then(monkeypatch, caplog):
    import generator.checkpoint as checkpoint

    caplog.set_level("INFO", logger="generator.download")
    monkeypatch.setattr(checkpoint, "DOWNLOAD_LOG_EVERY_S", 0.0)
    bar = checkpoint._progress_lines("someone/model")
    with bar(desc="Reconstructing", total=int(15e9), unit="B") as written, \
            bar(desc="Downloading bytes", total=int(20e9), unit="B") as received, bar(total=12) as files:
        written.update(int(4.1e9))
        received.update(int(4.1e9))  # the same bytes counted on the way in: not said twice
        files.update(3)
    assert [r.getMessage() for r in caplog.records] == ["downloading someone/model: 4.10 of 15.00 GB"]


def test_the_random_builtin_model_is_built_once_in_the_cache_or_says_where_it_cannot(monkeypatch, tmp_path):
    from generator.checkpoint import resolve_model

    monkeypatch.setenv("JANUS_BOT_CACHE", str(tmp_path / "cache"))
    built = resolve_model("builtin:tiny")
    assert built == str(tmp_path / "cache" / "models" / "tiny-random-v1")
    assert load_checkpoint(built).num_image_tokens == 36
    stamp = (Path(built) / "config.json").stat().st_mtime_ns
    assert resolve_model("builtin:tiny") == built and (Path(built) / "config.json").stat().st_mtime_ns == stamp
    (tmp_path / "a-file").touch()
    monkeypatch.setenv("JANUS_BOT_CACHE", str(tmp_path / "a-file"))
    with pytest.raises(CheckpointError) as info:
        resolve_model("builtin:tiny")
    assert str(info.value) == (f"Cannot build builtin:tiny in '{tmp_path / 'a-file' / 'models'}' (Not a directory); "
                               f"set JANUS_BOT_CACHE to a directory you can write in.")
