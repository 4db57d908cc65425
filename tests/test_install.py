"""scripts/install's choice of torch build, for machines described rather than this one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("torch_choice", ROOT / "scripts" / "torch_choice.py")
assert spec is not None and spec.loader is not None
torch_choice = importlib.util.module_from_spec(spec)
sys.modules["torch_choice"] = torch_choice
spec.loader.exec_module(torch_choice)
Machine, choose, NoBuild = torch_choice.Machine, torch_choice.choose, torch_choice.NoBuild

LINUX = {"system": "Linux", "arch": "x86_64"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.mark.parametrize(("machine", "wanted", "build", "said"), [
    (Machine(**LINUX, gpu=False), "auto", "cpu", "for the CPU: this machine has no NVIDIA GPU"),
    (Machine(**LINUX, gpu=True, driver_cuda=(13, 1)), "auto", "cu130", "the NVIDIA driver supports CUDA 13.1"),
    (Machine(**LINUX, gpu=True, driver_cuda=(12, 9)), "auto", "cu128", "the NVIDIA driver supports CUDA 12.9"),
    (Machine(**LINUX, gpu=True, driver_cuda=(12, 6)), "auto", "cu126", "supports CUDA 12.6"),
    (Machine(**LINUX, gpu=True, driver_cuda=(12, 2)), "auto", "cpu", "older than torch's CUDA builds need (12.6)"),
    (Machine(**LINUX, gpu=True), "auto", "cu126", "nvidia-smi does not say; cu126 runs on the most drivers"),
    (Machine(**LINUX, gpu=True, driver_cuda=(13, 0)), "cpu", "cpu", "for the CPU, as asked (--torch cpu)"),
    (Machine(**LINUX, gpu=False), "cpu", "cpu", "as asked"),
    (Machine("Darwin", "arm64", gpu=False), "auto", "default", "from PyPI (Darwin arm64)"),
    (Machine("Linux", "aarch64", gpu=False), "auto", "default", "from PyPI (Linux aarch64)"),
])  # fmt: skip
def test_the_build_follows_the_gpu_and_its_driver(machine, wanted, build, said) -> None:  # type: ignore[no-untyped-def]
    choice = choose(machine, wanted)
    assert choice.build == build and said in choice.why
    if build == "cpu":
        assert choice.pip == ["torch==2.13.0+cpu", "--extra-index-url", CPU_INDEX]
    elif build.startswith("cu"):
        assert choice.pip == [f"torch==2.13.0+{build}", "--extra-index-url", f"https://download.pytorch.org/whl/{build}"]
    else:
        assert choice.pip == ["torch==2.13.0"]


@pytest.mark.parametrize(("machine", "said"), [
    (Machine(**LINUX, gpu=False), "No NVIDIA GPU is visible (no driver loaded); install its driver, or use"),
    (Machine(**LINUX, gpu=True, driver_cuda=(11, 8)), "supports CUDA 11.8; torch 2.13.0 needs 12.6 or newer"),
    (Machine("Darwin", "arm64", gpu=False), "PyTorch has no CUDA build for Darwin; use --torch cpu."),
])  # fmt: skip
def test_asking_for_cuda_where_it_cannot_run_is_one_sentence(machine, said) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoBuild) as refused:
        choose(machine, "cuda")
    assert said in str(refused.value)


def test_nvidia_smi_header_gives_the_drivers_cuda_version() -> None:
    header = "| NVIDIA-SMI 580.65.06   Driver Version: 580.65.06   CUDA Version: 13.0     |"
    assert torch_choice.driver_cuda(header) == (13, 0)
    assert torch_choice.driver_cuda("NVIDIA-SMI has failed") is None


def test_the_script_prints_a_sentence_and_pip_arguments_on_this_machine() -> None:
    shown = subprocess.run([sys.executable, str(ROOT / "scripts" / "torch_choice.py"), "--torch", "cpu"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert shown.stderr == "install: torch 2.13.0 for the CPU, as asked (--torch cpu).\n"
    assert shown.stdout.splitlines() == ["torch==2.13.0+cpu", "--extra-index-url", CPU_INDEX]
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "install"), "--gpu"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr == ("install: unknown option '--gpu'; usage: scripts/install "
                                                  "[--torch auto|cpu|cuda]\n")
