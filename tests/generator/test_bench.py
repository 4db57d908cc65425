"""`janus-bot bench` runs every method on one workload and prints the figures."""

from __future__ import annotations

import re
import subprocess
import sys


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "janus_bot", "bench", *args], capture_output=True, text=True,
                          timeout=300)


def test_bench_prints_each_method_and_the_speedup_for_each_workload():
    run = _bench("--preset", "tiny", "--tokens", "16", "--workload", "1x1", "2x2", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "16 tokens per image (64 px)" in out
    blocks = out.split("requests x")[1:]
    assert len(blocks) == 2
    for block in blocks:
        for method in ("reference", "transformers", "engine"):
            line = re.search(rf"^{method}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", block, re.M)
            assert line, f"no {method} row in:\n{block}"
            assert float(line[1]) > 0 and int(line[5]) > 0  # images/s and peak MiB
        assert re.search(r"^speedup vs reference: \d+\.\d\d$", block, re.M)


def test_bench_staggered_reports_how_soon_requests_joined():
    run = _bench("--preset", "tiny", "--tokens", "16", "--requests", "3", "--images", "1", "--arrival", "staggered",
                 "--skip", "transformers", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^engine: \d of 3 requests joined at the first step after arriving", run.stdout, re.M)
    assert "transformers" not in run.stdout.split("requests x")[1]


def test_bench_refuses_a_malformed_workload_in_one_line():
    run = _bench("--workload", "4by4")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["janus-bot: error: A workload is REQUESTSxIMAGES, like 4x4; "
                                               "you gave '4by4'."]
