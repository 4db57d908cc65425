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
    assert all(block.splitlines()[0].endswith(", median of 3 interleaved runs") for block in blocks)  # CPU default
    for block in blocks:
        for method in ("reference", "transformers", "engine"):
            line = re.search(rf"^{method}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", block, re.M)
            assert line, f"no {method} row in:\n{block}"
            assert float(line[1]) > 0 and int(line[5]) > 0  # images/s and peak MiB
        assert re.search(r"^speedup vs reference: \d+\.\d\d$", block, re.M)
        assert "\nengine: decode steps through the own step\n" in block  # the tiny model is a plain Llama


def test_bench_staggered_reports_how_soon_requests_joined():
    run = _bench("--preset", "tiny", "--tokens", "16", "--requests", "3", "--images", "1", "--arrival", "staggered",
                 "--skip", "transformers", "--device", "cpu", "--repeat", "1")
    assert run.returncode == 0, run.stderr
    assert "3 requests x 1 images\n" in run.stdout  # one run each: no median
    assert re.search(r"^engine: decode steps through the own step; \d of 3 requests joined at the first step after "
                     r"arriving", run.stdout, re.M)
    assert "transformers" not in run.stdout.split("requests x")[1]


def test_bench_refuses_a_malformed_workload_in_one_line():
    run = _bench("--workload", "4by4")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["janus-bot: error: A workload is REQUESTSxIMAGES, like 4x4; "
                                               "you gave '4by4'."]


def test_bench_refuses_zero_repeats_in_one_line():
    run = _bench("--repeat", "0")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == ["janus-bot: error: --repeat must be at least 1; you gave 0."]


def test_the_median_run_is_the_middle_one_by_time():
    from generator.bench import Measurement, _median

    runs = [Measurement("engine", 4, seconds, 10, [seconds], 1) for seconds in (3.0, 1.0, 2.0, 9.0)]
    assert _median(runs[:3]).seconds == 2.0
    assert _median(runs).seconds == 2.0  # of an even number, the faster of the middle two


def test_each_method_serves_its_first_batch_once_before_it_is_timed(monkeypatch, capsys):
    import argparse
    import types

    import torch

    from generator import bench

    calls = []

    def method(name):
        def run(checkpoint, requests, arrivals, **options):
            calls.append((name, len(requests), max(arrivals)))
            return bench.Measurement(name, sum(r.num_images for r in requests), 1.0, 10, [1.0], 1)
        return run

    for name in ("reference", "transformers", "engine"):
        monkeypatch.setattr(bench, f"run_{name}", method(name))
    args = argparse.Namespace(skip=[], arrival="together", max_batch_images=None, graphs=None, compile=False,
                              repeat=2)
    bench.run_workload(types.SimpleNamespace(device=torch.device("cpu")), args, requests_n=3, images=2)
    assert calls[:3] == [("reference", 1, 0.0), ("transformers", 1, 0.0), ("engine", 3, 0.0)]  # untimed
    assert calls[3:] == [("reference", 3, 0.0), ("transformers", 3, 0.0), ("engine", 3, 0.0)] * 2
    assert "speedup vs reference: 1.00" in capsys.readouterr().out  # a warm-up's figures would make it 3.00


def test_serving_bench_drives_the_generator_process_and_ends_with_the_step_gap():
    run = _bench("--serving", "--preset", "tiny", "--tokens", "16", "--requests", "2", "--images", "2",
                 "--preview-every", "4", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "serving: 2 requests x 2 images, one every " in out and ", previews every 4 steps\n" in out
    for method in ("engine", "serving"):
        line = re.search(rf"^{method}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
        assert line and float(line[1]) > 0, f"no {method} row in:\n{out}"
    assert re.search(r"^serving: \d+ progress reports, \d+ with a preview; 4 PNGs$", out, re.M)
    for method in ("engine", "serving"):
        assert re.search(rf"^{method} step gaps: median [\d.]+ ms, 99th percentile [\d.]+ ms, longest [\d.]+ ms "
                         r"\([\d.]+ x median\)$", out, re.M), out
    assert re.search(r"^serving vs engine: \d+\.\d\d$", out, re.M)
    assert re.fullmatch(r"longest step gap: \d+\.\d x median", out.splitlines()[-1])


def test_serving_bench_with_describes_prints_images_per_second_both_ways():
    run = _bench("--serving", "--describe", "2", "--preset", "tiny", "--tokens", "16", "--requests", "2", "--images",
                 "2", "--device", "cpu", "--repeat", "1")
    assert run.returncode == 0, run.stderr
    out = run.stdout.split("\ndescribe: ")[1]
    assert out.startswith("2 jobs x 4 prompts (temperature 0.7, at most 64 tokens) arriving through the same "
                          "workload; one run each\n")
    for method in ("serving", "serving+describe"):
        line = re.search(rf"^{re.escape(method)}\s+([\d.]+)(\s+[\d.]+){{4}}$", out, re.M)
        assert line and float(line[1]) > 0, f"no {method} row in:\n{out}"
    calls = re.search(r"^describe jobs: p50 latency [\d.]+ s, longest [\d.]+ s; (\d+) calls of ", out, re.M)
    assert calls and 1 <= int(calls[1]) <= 2, out  # two jobs, in one call when they wait together
    assert re.fullmatch(r"images/s with describes vs without: \d+\.\d\d", out.splitlines()[-1])


def test_serving_bench_refuses_describes_without_serving_in_one_line():
    run = _bench("--describe", "2")
    assert run.returncode == 2
    assert run.stderr.strip() == "janus-bot: error: --describe goes with --serving and is 1 or more describe jobs."


def test_serving_bench_refuses_several_workloads_in_one_line():
    run = _bench("--serving", "--workload", "1x1", "2x2")
    assert run.returncode == 2
    assert run.stderr.strip() == "janus-bot: error: --serving runs one workload; give it with --requests and --images."


def test_bench_regions_prints_the_cost_per_image_of_each_region_kind():
    run = _bench("--preset", "tiny", "--tokens", "16", "--workload", "2x2", "--regions", "--skip", "reference",
                 "transformers", "--device", "cpu", "--repeat", "1")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "\nregions: 2 requests x 2 images from a picture, engine only\n" in out
    steps = {}
    for kind in ("plain", "bottom half", "top half", "mixed"):
        line = re.search(rf"^{kind}\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$", out, re.M)
        assert line and float(line[1]) > 0, f"no {kind} row in:\n{out}"
        steps[kind] = int(line[3])
    # 16 tokens, the first sampled at admission: the kept top half still steps, the kept bottom half does not
    assert steps == {"plain": 15, "bottom half": 15, "top half": 7, "mixed": 15}
    assert out.splitlines()[-1].startswith("regions: a kept cell before the last regenerated one still takes a step")


def test_bench_refuses_regions_with_serving_in_one_line():
    run = _bench("--serving", "--regions")
    assert run.returncode == 2
    assert run.stderr.strip() == "janus-bot: error: --regions measures the engine alone; leave out --serving."
