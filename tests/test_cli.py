from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from janus_bot.cli import main


def test_imagine_writes_a_two_by_two_grid(tiny_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["imagine", "a lighthouse at dusk", "--model", str(tiny_dir), "-n", "4", "-o", str(out)]) == 0
    assert Image.open(out).size == (192, 192)
    assert "4 images from 1 prompt(s)" in capsys.readouterr().out


def test_several_prompts_in_one_batch_write_named_images(tiny_dir, tmp_path):
    out_dir = tmp_path / "images"
    args = ["imagine", "red", "blue sky", "--model", str(tiny_dir), "-n", "2", "--seed", "4", "--out-dir",
            str(out_dir)]
    assert main(args) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["0-0.png", "0-1.png", "1-0.png", "1-1.png"]
    assert Image.open(out_dir / "1-1.png").size == (96, 96)
    first = (out_dir / "0-0.png").read_bytes()
    assert main(args) == 0  # same seed, same pictures
    assert (out_dir / "0-0.png").read_bytes() == first


def test_upscale_and_other_formats(tiny_dir, tmp_path):
    args = ["imagine", "red", "--model", str(tiny_dir), "-n", "1", "--upscale", "256", "--out-dir", str(tmp_path),
            "-o", str(tmp_path / "grid.webp")]
    assert main(args) == 0
    assert Image.open(tmp_path / "0-0.png").size == (256, 256)
    assert Image.open(tmp_path / "grid.webp").format == "WEBP"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["  "], "prompt is empty"),
        (["x" * 1001], "keep it under 1000"),
        (["red", "-n", "0"], "count must be"),
        (["red", "-n", "17"], "count must be"),
        (["red", "--cfg", "11"], "cfg must be between 1 and 10"),
        (["red", "--temperature", "2"], "temperature must be between 0 and 1.5"),
        (["red", "-o", "grid.gif"], "use .png, .jpg or .webp"),
        (["red", "--upscale", "0"], "--upscale must be"),
        (["red", "--model", "/no/such/model"], "is not a directory"),
    ],
)
def test_bad_input_exits_2_with_one_sentence(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["imagine", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("janus-bot: error:") and "\n" not in err


def test_make_model_and_unknown_preset(tmp_path, capsys):
    assert main(["make-model", str(tmp_path / "m"), "--preset", "tiny", "--seed", "3"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert main(["make-model", str(tmp_path / "n"), "--preset", "huge"]) == 2
    assert "Unknown preset 'huge'" in capsys.readouterr().err


def test_console_script_uses_the_builtin_model_by_default(tmp_path):
    env = {**os.environ, "JANUS_BOT_CACHE": str(tmp_path / "cache")}
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "janus-bot")] if (bin_dir / "janus-bot").exists() else [sys.executable, "-m",
                                                                                      "janus_bot"]
    done = subprocess.run([*command, "imagine", "a lighthouse at dusk", "-n", "4", "-o", "grid.png"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "grid.png").size[0] == Image.open(tmp_path / "grid.png").size[1]
    assert "Traceback" not in done.stderr
