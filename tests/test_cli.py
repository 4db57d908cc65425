from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from janus_bot.cli import main
from tests.bot.helpers import free_port


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
        (["red", "-o", "grid.gif"], "-o 'grid.gif' needs a picture file name ending in .png, .jpg or .webp."),
        (["red", "-o", "a-dir"], "-o 'a-dir' is a directory; give a file name, such as 'a-dir/imagine.png'."),
        (["red", "-o", "/proc/x.png"], "Cannot write files in '/proc'"),
        (["red", "--upscale", "0"], "--upscale must be"),
        (["red", "--model", "/no/such/model"], "is not a directory"),
        (["red", "--model", "not a hub id"], "neither a local directory nor a hub id"),
        (["red", "--device", "tpu"], "Unknown device 'tpu'; use cpu, cuda or cuda:N."),
        (["red", "--device", "cuda:99"], "Cannot use device 'cuda:99'"),
        (["red", "-o", "a-file/grid.png"], "'a-file' is a file, not a directory."),
        (["red", "--out-dir", "a-file/images"], "Cannot make the directory 'a-file/images': Not a directory."),
    ],
)
def test_bad_input_exits_2_with_one_sentence(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").touch()
    (tmp_path / "a-dir").mkdir()
    assert main(["imagine", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("janus-bot: error:") and "\n" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imagine", "red", "--cfg", "abc"], "argument --cfg: invalid float value: 'abc'"),
        (["imagine", "red", "--bogus"], "unrecognized arguments: --bogus"),
        (["imagine"], "the following arguments are required: PROMPT"),
        (["make-model"], "the following arguments are required: OUT_DIR"),
        (["make-model", "m", "--seed", "one"], "argument --seed: invalid int value: 'one'"),
    ],
)
def test_argument_mistakes_are_one_sentence_too(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err == f"janus-bot {args[0]}: error: {message} (janus-bot {args[0]} -h lists the options)\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU this test says it lacks")
@pytest.mark.parametrize("command", [["imagine", "red"], ["bench", "--preset", "tiny"]])
def test_cuda_without_a_gpu_is_one_sentence(command, capsys):
    assert main([*command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("janus-bot: error: Cannot use device 'cuda': ") and "use cpu" in err and "\n" not in err


def _janus_bot(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "janus-bot")] if (bin_dir / "janus-bot").exists() else [sys.executable, "-m",
                                                                                      "janus_bot"]
    return subprocess.run([*command, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600)


def _hub_cache(root: Path, repo: str, checkpoint: Path) -> None:
    """`checkpoint` as the hub's client caches a download of `repo` (refs/main -> snapshots/<commit>)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint, folder / "snapshots" / commit)


def test_hub_id_when_the_hub_cannot_be_reached(tiny_dir, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    missing = _janus_bot("imagine", "red", "--model", "someone/janus-tiny", env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("janus-bot: error: Model 'someone/janus-tiny' is not in the local cache and "
                                      "the hub cannot be reached; download it on a connected machine or give a "
                                      "local checkpoint directory.")  # at once: no retries, one line
    _hub_cache(tmp_path / "hf", "someone/janus-tiny", tiny_dir)
    cached = _janus_bot("imagine", "red", "--model", "someone/janus-tiny", "-n", "1", "-o", "one.png", env=env,
                        cwd=tmp_path)
    assert cached.returncode == 0, cached.stderr
    assert Image.open(tmp_path / "one.png").size == (96, 96)
    assert "Retrying" not in cached.stderr and "Traceback" not in cached.stderr


def test_hub_id_the_hub_does_not_have(tmp_path):
    asked = []

    class NotFound(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
        done = _janus_bot("imagine", "red", "--model", "someone/no-such-model", env=env, cwd=tmp_path)
    finally:
        server.shutdown()
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.startswith("janus-bot: error: Model 'someone/no-such-model' is neither a local directory nor a hub id "
                          "that could be fetched") and "\n" not in err
    assert any("/someone/no-such-model/" in path for path in asked)  # the hub was asked, and said no


class FakeHub(BaseHTTPRequestHandler):
    """The hub's HTTP interface as the hub's client uses it to download a model: its file list, then each file."""

    repo = ""
    folder = Path()
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        files = sorted(self.folder.iterdir())
        if path.startswith(f"/api/models/{self.repo}/revision/"):
            siblings = [{"rfilename": f.name} for f in files]
            body = json.dumps({"id": self.repo, "sha": self.commit, "siblings": siblings}).encode()
            return self._send(200, body, {"Content-Type": "application/json"})
        if path.startswith(f"/api/models/{self.repo}/tree/"):
            tree = [{"type": "file", "path": f.name, "size": f.stat().st_size, "oid": "0" * 40} for f in files]
            return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
        prefix = f"/{self.repo}/resolve/"
        if path.startswith(prefix) and (self.folder / path.rsplit("/", 1)[1]).is_file():
            body = (self.folder / path.rsplit("/", 1)[1]).read_bytes()
            etag = hashlib.sha256(body).hexdigest()
            return self._send(200, body, {"X-Repo-Commit": self.commit, "ETag": f'"{etag}"'})
        self._send(404, b"", {"X-Error-Code": "EntryNotFound"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_hub_id_is_downloaded_once_then_loads_from_the_cache(tiny_dir, tmp_path):
    FakeHub.repo, FakeHub.folder, FakeHub.asked = "someone/janus-tiny", tiny_dir, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    try:
        first = _janus_bot("imagine", "red", "--model", "someone/janus-tiny", "-n", "1", "-o", "a.png", env=env,
                           cwd=tmp_path)
        assert first.returncode == 0, (first.stderr, FakeHub.asked)
        assert first.stderr == "downloading someone/janus-tiny from the hub into its cache (once)\n"
        got = {line.split()[1].rsplit("/", 1)[1] for line in FakeHub.asked if line.startswith("GET /someone/")}
        assert got == {f.name for f in tiny_dir.iterdir()}  # every file of the checkpoint, the weights too
        FakeHub.asked.clear()
        again = _janus_bot("imagine", "red", "--model", "someone/janus-tiny", "-n", "1", "-o", "b.png", env=env,
                           cwd=tmp_path)
        assert again.returncode == 0 and again.stderr == "", again.stderr
        assert not [line for line in FakeHub.asked if line.startswith("GET /someone/")]  # nothing fetched again
    finally:
        server.shutdown()
    assert Image.open(tmp_path / "a.png").size == Image.open(tmp_path / "b.png").size == (96, 96)


def test_make_model_and_unknown_preset(tmp_path, capsys):
    assert main(["make-model", str(tmp_path / "m"), "--preset", "tiny", "--seed", "3"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert main(["make-model", str(tmp_path / "n"), "--preset", "huge"]) == 2
    assert "Unknown preset 'huge'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["make-model", "OUT", "--preset", "small"], ["bench", "--preset", "small"]])
def test_random_weights_that_would_not_fit_in_memory_are_refused_before_building(command, tmp_path, capsys,
                                                                                  monkeypatch):
    import generator.presets as presets

    monkeypatch.setattr(presets, "_free_bytes", lambda device: 10**6)  # 1 MB free, as if the machine were full
    assert main([str(tmp_path / "m") if arg == "OUT" else arg for arg in command]) == 2
    assert re.fullmatch(r"janus-bot: error: Random small weights take \d+\.\d GB to build and cpu has 0\.0 GB "
                        r"free; pick a smaller preset or another device\.\n", capsys.readouterr().err)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("command", [["make-model", "--preset", "tiny"], ["train-demo"]])
def test_an_output_directory_that_cannot_be_made_is_refused_before_any_work(command, tmp_path, capsys):
    (tmp_path / "a-file").touch()
    out = str(tmp_path / "a-file" / "model")
    assert main([command[0], out, *command[1:]]) == 2  # train-demo would otherwise fail after half an hour
    assert capsys.readouterr().err == f"janus-bot: error: Cannot make the directory {out!r}: Not a directory.\n"


def test_console_script_uses_the_builtin_model_by_default(tmp_path):
    env = {**os.environ, "JANUS_BOT_CACHE": str(tmp_path / "cache")}
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "janus-bot")] if (bin_dir / "janus-bot").exists() else [sys.executable, "-m",
                                                                                      "janus_bot"]
    done = subprocess.run([*command, "imagine", "a lighthouse at dusk", "-n", "4", "-o", "grid.png"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    from generator.checkpoint import DEMO_MODEL_DIR

    assert f"model {DEMO_MODEL_DIR}\n" in done.stdout  # the demo model shipped in the package, not another
    side = json.loads((DEMO_MODEL_DIR / "config.json").read_text())["vision_config"]["image_size"]
    assert side == 48  # its pictures (generator/demo_model/README.md): 4 of them make a 2x2 grid of 96 px
    assert Image.open(tmp_path / "grid.png").size == (2 * side, 2 * side)
    assert "Traceback" not in done.stderr


def _picture_file(tmp_path: Path) -> Path:
    """A picture that is not square nor the tiny model's size: the CLI crops and resizes it."""
    picture = Image.new("RGB", (150, 100), (30, 60, 200))
    picture.paste((220, 40, 40), (40, 10, 110, 50))
    path = tmp_path / "start.jpg"
    picture.save(path)
    return path


def test_imagine_from_a_picture_keeps_all_but_the_region(tiny_dir, tmp_path, monkeypatch):
    from generator import engine as engine_module

    picture = _picture_file(tmp_path)
    seen = []
    real = engine_module.generate

    def spy(checkpoint, requests, **options):
        seen.extend(requests)
        return real(checkpoint, requests, **options)

    monkeypatch.setattr(engine_module, "generate", spy)
    out = tmp_path / "images"
    assert main(["imagine", "red", "blue", "--model", str(tiny_dir), "-n", "2", "--seed", "1", "--image", str(picture),
                 "--region", "0,0,0.5,1", "--no", "green", "--out-dir", str(out)]) == 0
    assert len(seen) == 2 and all(r.negative == "green" and r.forced is not None for r in seen)
    keep = seen[0].keep.view(6, 6)
    assert not keep[:, :3].any() and keep[:, 3:].all()  # the left half regenerated
    assert len(list(out.iterdir())) == 4
    seen.clear()
    assert main(["imagine", "red", "--model", str(tiny_dir), "-n", "1", "--image", str(picture), "-o",
                 str(tmp_path / "a.png")]) == 0
    assert torch.equal(seen[0].keep, torch.arange(36) < 18)  # no --region: the bottom half regenerated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "missing.png"], "Cannot read --image 'missing.png': No such file or directory."),
        (["--image", "notes.txt"], "--image 'notes.txt': The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        (["--image", "broken.png"], "--image 'broken.png': The picture could not be read ("),
        (["--image", "."], "--image '.' is a directory, not a picture file."),
        (["--region", "0,0,1,1"], "--region goes with --image"),
        (["--image", "start.png", "--region", "0,0,1.5,1"], "A region's corners must lie between 0 and 1"),
        (["--image", "start.png", "--region", "0.5,0,0.5,1"], "The region 0.5,0,0.5,1 is empty"),
        (["--image", "start.png", "--region", "left"], "A region is four numbers X0,Y0,X1,Y1"),
        (["--no", "x" * 1001], "The negative prompt is 1001 characters long; keep it under 1000."),
    ],
)
def test_bad_pictures_and_regions_exit_2_before_any_model_work(args, message, capsys, tmp_path, monkeypatch):
    import generator.checkpoint as checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a picture")
    Image.new("RGB", (64, 64)).save(tmp_path / "start.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "start.png").read_bytes()[:60])
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["imagine", "red", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"janus-bot: error: {message}") and "\n" not in err, err


def test_describe_json_is_a_line_per_picture_whose_tokens_read_as_its_prompts(tiny_dir, tmp_path, capsys):
    from generator.checkpoint import load_checkpoint
    from generator.describe import clean

    first, second = _picture_file(tmp_path), tmp_path / "yellow.png"
    Image.new("RGB", (64, 64), (240, 220, 30)).save(second)
    args = ["describe", str(first), str(second), "--model", str(tiny_dir), "-n", "3", "--seed", "5", "--max-tokens",
            "6"]
    assert main([*args, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pictures = [json.loads(line) for line in lines]
    assert [p["image"] for p in pictures] == [str(first), str(second)]
    processor = load_checkpoint(tiny_dir, device="cpu").processor
    eos = processor.tokenizer.eos_token_id
    for picture in pictures:
        assert set(picture) == {"image", "prompts", "tokens"} and len(picture["prompts"]) == len(picture["tokens"]) == 3
        for prompt, ids in zip(picture["prompts"], picture["tokens"]):
            assert 0 < len(ids) <= 6
            assert prompt == clean(processor.decode(ids, skip_special_tokens=True), finished=ids[-1] == eos)

    assert main(args) == 0  # the same seed, as text: each path, then its numbered prompts
    out = capsys.readouterr().out.splitlines()
    assert out == [str(first), *[f"  {n}. {p}" for n, p in enumerate(pictures[0]["prompts"], 1)], "",
                   str(second), *[f"  {n}. {p}" for n, p in enumerate(pictures[1]["prompts"], 1)]]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["missing.png"], "Cannot read 'missing.png': No such file or directory."),
        (["start.png", "notes.txt"], "'notes.txt': The file is not a picture; use a PNG, JPEG, WebP or GIF."),
        (["broken.png"], "'broken.png': The picture could not be read ("),
        (["bomb.png"], "'bomb.png': The picture is 9000x9000 pixels; use one of at most 64 megapixels."),
        (["huge.png"], "'huge.png' is 33.0 MB; use a picture of at most 32 MB."),
        (["."], "'.' is a directory, not a picture file."),
        (["start.png", "-n", "17"], "count must be a whole number from 1 to 16 prompts; you gave 17."),
        (["start.png", "--max-tokens", "0"], "max_tokens must be a whole number from 1 to 512; you gave 0."),
        (["start.png", "--temperature", "2.5"], "temperature must be between 0 and 2; you gave 2.5."),
    ],
)
def test_describe_bad_files_exit_2_with_one_sentence_before_any_model_work(files, message, capsys, tmp_path,
                                                                            monkeypatch):
    import generator.checkpoint as checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a picture")
    Image.new("RGB", (64, 64)).save(tmp_path / "start.png")
    (tmp_path / "broken.png").write_bytes((tmp_path / "start.png").read_bytes()[:60])
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")
    with open(tmp_path / "huge.png", "wb") as huge:
        huge.truncate(33 * 2**20)
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["describe", *files]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"janus-bot: error: {message}") and "\n" not in err, err
