"""Which build of torch `scripts/install` puts in the venv: CPU without an NVIDIA GPU, else the CUDA build the
driver can run. Standard library only: it runs before the venv has anything.

    python3 scripts/torch_choice.py [--torch auto|cpu|cuda]

prints the choice as one sentence on stderr and pip's arguments on stdout, one per line.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TORCH = "2.13.0"  # as requirements.txt pins it
INDEX = "https://download.pytorch.org/whl"
# The CUDA builds PyTorch publishes for this torch, newest first, with the CUDA version the driver must
# support (`nvidia-smi` shows it as "CUDA Version"). Check https://pytorch.org/get-started/locally/ when
# TORCH changes.
CUDA_BUILDS = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))


@dataclass(frozen=True)
class Machine:
    """What the choice depends on."""

    system: str  # platform.system(): Linux, Darwin, Windows
    arch: str  # platform.machine(): x86_64, aarch64, arm64
    gpu: bool  # an NVIDIA driver is loaded
    driver_cuda: tuple[int, int] | None = None  # the newest CUDA the driver supports, when nvidia-smi says


@dataclass(frozen=True)
class Choice:
    build: str  # "cpu", "cu128", ... or "default" (PyPI's own)
    pip: list[str]  # pip install arguments
    why: str  # one sentence for the person installing


class NoBuild(Exception):
    """No torch build fits the request; the message says what to do."""


def choose(machine: Machine, wanted: str = "auto") -> Choice:
    """The torch build for `machine`; `wanted` forces "cpu" or "cuda"."""
    if machine.system != "Linux" or machine.arch not in ("x86_64", "AMD64"):
        if wanted == "cuda" and machine.system != "Linux":
            raise NoBuild(f"PyTorch has no CUDA build for {machine.system}; use --torch cpu.")
        # macOS and Linux on ARM: PyPI's own wheel (CPU, or Apple's GPU through MPS) is the right one.
        return Choice("default", [f"torch=={TORCH}"], f"torch {TORCH} from PyPI ({machine.system} {machine.arch}).")
    cpu = Choice("cpu", [f"torch=={TORCH}+cpu", "--extra-index-url", f"{INDEX}/cpu"], "")
    if wanted == "cpu":
        return Choice(cpu.build, cpu.pip, f"torch {TORCH} for the CPU, as asked (--torch cpu).")
    if not machine.gpu:
        if wanted == "cuda":
            raise NoBuild("No NVIDIA GPU is visible (no driver loaded); install its driver, or use --torch cpu.")
        return Choice(cpu.build, cpu.pip, f"torch {TORCH} for the CPU: this machine has no NVIDIA GPU "
                                          f"(--torch cuda to install the CUDA build anyway).")
    if machine.driver_cuda is None:  # a driver without nvidia-smi: the build the most drivers run
        build = CUDA_BUILDS[-1][1]
        why = f"an NVIDIA GPU whose CUDA version nvidia-smi does not say; {build} runs on the most drivers"
    else:
        fits = [build for needs, build in CUDA_BUILDS if machine.driver_cuda >= needs]
        driver = ".".join(map(str, machine.driver_cuda))
        if not fits:
            oldest = ".".join(map(str, CUDA_BUILDS[-1][0]))
            if wanted == "cuda":
                raise NoBuild(f"The NVIDIA driver supports CUDA {driver}; torch {TORCH} needs {oldest} or newer. "
                              f"Update the driver, or use --torch cpu.")
            return Choice(cpu.build, cpu.pip, f"torch {TORCH} for the CPU: the NVIDIA driver supports CUDA "
                                              f"{driver}, older than torch's CUDA builds need ({oldest}); update "
                                              f"the driver and install again for the GPU.")
        build = fits[0]
        why = f"the NVIDIA driver supports CUDA {driver}"
    pip = [f"torch=={TORCH}+{build}", "--extra-index-url", f"{INDEX}/{build}"]
    return Choice(build, pip, f"torch {TORCH} for CUDA ({build}): {why} (--torch cpu for the CPU build).")


def this_machine() -> Machine:
    """The machine this runs on."""
    gpu = Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None
    cuda = None
    if shutil.which("nvidia-smi"):
        try:
            shown = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            shown = ""
        gpu = gpu or "NVIDIA-SMI" in shown
        cuda = driver_cuda(shown)
    return Machine(platform.system(), platform.machine(), gpu, cuda)


def driver_cuda(nvidia_smi: str) -> tuple[int, int] | None:
    """The "CUDA Version: 12.8" nvidia-smi's header shows, as (12, 8)."""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", nvidia_smi)
    return (int(found[1]), int(found[2])) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the pip arguments of the torch build for this machine.")
    parser.add_argument("--torch", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    try:
        choice = choose(this_machine(), args.torch)
    except NoBuild as error:
        print(f"install: {error}", file=sys.stderr)
        return 2
    print(f"install: {choice.why}", file=sys.stderr)
    print("\n".join(choice.pip))
    return 0


if __name__ == "__main__":
    sys.exit(main())
