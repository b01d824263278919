"""Benchmark of the data path: cube extraction (vectorised vs the published per-voxel loop), grain batches/s,
and the peak memory of `data prepare` for two dataset sizes.

Run:
  python experiments/bench_data.py                 # ~3-4 minutes on a 2-core CPU
  python experiments/bench_data.py --skip-rss      # without the two prepare subprocesses
Writes experiments/results/bench_data_<device>.md; the last printed line is
  extraction_speedup_vs_published: <ratio>x
Both extractions run the published rule and constants (64x64x32 cubes, margins 100/100/30, tissue test 0.425/0.15,
look-ahead 3) on the same volume (a synthetic CT phantom of LUNA16-like size) with the same seed, so they accept
the same cubes; the published loop runs for ``--published-cubes`` cubes (it takes seconds per candidate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from genesis_jax.data.cubes import PUBLISHED_RULE, extract_cubes, extract_cubes_published_loop  # noqa: E402
from genesis_jax.data.normalize import normalize_ct, quantize_unit  # noqa: E402
from genesis_jax.data.phantom import synthetic_ct  # noqa: E402
from genesis_jax.data.pipeline import pretrain_dataset  # noqa: E402
from genesis_jax.data.sources import ArraySource  # noqa: E402

PUBLISHED = {k: v for k, v in PUBLISHED_RULE.items() if k != "cubes_per_scan"}

# Peak RSS from /proc/self/status VmHWM: ru_maxrss would carry over the (large) RSS of this parent process, which
# Linux keeps across fork + exec.
_RSS_CHILD = """
import json, resource, sys
sys.path.insert(0, {repo!r})
from genesis_jax.config_loader import load_config
from genesis_jax.data.prepare import prepare
config = load_config("data/genesis_cubes:tiny", {overrides!r}).data
summary = prepare(config)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
peak_kib = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(peak_rss_mib=peak_kib / 1024,
                      examples=sum(summary.examples.values()), bytes=summary.bytes_on_disk)))
"""


def bench_extraction(volume01: np.ndarray, published_cubes: int, seed: int) -> dict:
    start = time.perf_counter()
    fast = extract_cubes(volume01, cubes_per_scan=32, seed=seed, **PUBLISHED)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    fast_few = extract_cubes(volume01, cubes_per_scan=published_cubes, seed=seed, **PUBLISHED)
    fast_few_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = extract_cubes_published_loop(volume01, cubes_per_scan=published_cubes, seed=seed, **PUBLISHED)
    slow_s = time.perf_counter() - start
    assert np.array_equal(fast_few, slow), "the two implementations accepted different cubes"
    return dict(vectorised_cubes=len(fast), vectorised_s=fast_s, vectorised_few_s=fast_few_s,
                published_cubes=len(slow), published_s=slow_s,
                vectorised_cps=len(fast) / fast_s, vectorised_few_cps=len(fast_few) / fast_few_s,
                published_cps=len(slow) / slow_s)


def bench_pipeline(cubes: np.ndarray, batch_size: int, batches: int) -> float:
    source = ArraySource(cube=quantize_unit(cubes))
    it = iter(pretrain_dataset(source, batch_size=batch_size, seed=0, shard_index=0, shard_count=1))
    for _ in range(5):  # warm up threads and prefetch
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    assert batch["cube"].shape == (batch_size, *cubes.shape[1:], 1)
    return batches / (time.perf_counter() - start)


def bench_prepare_rss(num_scans: int, buffer_mb: int, workdir: Path) -> dict:
    overrides = [f"--config.data.data_dir={workdir}/n{num_scans}_b{buffer_mb}", f"--config.data.name=rss{num_scans}",
                 f"--config.data.synthetic.num_scans={num_scans}", "--config.data.synthetic.shape=(160,160,128)",
                 "--config.data.cubes.cube_shape=(64,64,32)", "--config.data.cubes.margins=(8,8,4)",
                 "--config.data.cubes.cubes_per_scan=32", "--config.data.cubes.criterion=foreground",
                 "--config.data.cubes.foreground_threshold=0.3", f"--config.data.memory_buffer_mb={buffer_mb}"]
    code = _RSS_CHILD.format(repo=str(REPO), overrides=overrides)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare subprocess failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="384,384,192", help="phantom volume shape (x,y,z)")
    parser.add_argument("--published-cubes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    device = f"{platform.machine()}-{os.cpu_count()}core-cpu"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no accelerator used")

    start = time.perf_counter()
    volume01 = normalize_ct(synthetic_ct(shape, seed=args.seed)["image"])
    print(f"phantom {shape}: {time.perf_counter() - start:.2f} s")
    ext = bench_extraction(volume01, args.published_cubes, args.seed)
    print(f"vectorised extraction: {ext['vectorised_cubes']} cubes in {ext['vectorised_s']:.3f} s = "
          f"{ext['vectorised_cps']:.1f} cubes/s ({args.published_cubes} cubes: {ext['vectorised_few_cps']:.1f} cubes/s)")
    print(f"published per-voxel loop: {ext['published_cubes']} cubes in {ext['published_s']:.1f} s = "
          f"{ext['published_cps']:.3f} cubes/s (same cubes as the vectorised run: checked)")
    speedup = ext["vectorised_few_cps"] / ext["published_cps"]

    cubes = extract_cubes(volume01, cubes_per_scan=32, seed=args.seed + 1, **PUBLISHED)
    rates = {b: bench_pipeline(cubes, b, 200) for b in (6, 32)}
    for b, r in rates.items():
        print(f"grain pretrain pipeline (in-memory uint16 cubes 64x64x32, batch {b}): {r:.0f} batches/s "
              f"= {r * b:.0f} cubes/s")

    rss = {}
    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            for n, buffer_mb in ((4, 16), (16, 16), (16, 1000)):
                rss[(n, buffer_mb)] = bench_prepare_rss(n, buffer_mb, Path(tmp))
                r = rss[(n, buffer_mb)]
                print(f"prepare {n} phantoms 160x160x128 -> {r['examples']} cubes ({r['bytes'] / 2**20:.0f} MiB), "
                      f"write buffer {buffer_mb} MiB: peak RSS {r['peak_rss_mib']:.0f} MiB")

    lines = [f"# bench_data on {device}", "",
             f"Command: `python experiments/bench_data.py` (phantom {shape}, seed {args.seed}); machine: "
             f"{os.cpu_count()} CPU cores, no accelerator.", "",
             "| what | result |", "|---|---|",
             f"| vectorised extraction, 32 cubes | {ext['vectorised_s']:.3f} s, {ext['vectorised_cps']:.1f} cubes/s |",
             f"| vectorised extraction, {args.published_cubes} cubes | {ext['vectorised_few_cps']:.1f} cubes/s |",
             f"| published per-voxel loop, {args.published_cubes} cubes | {ext['published_s']:.1f} s, "
             f"{ext['published_cps']:.3f} cubes/s |",
             f"| speed-up (same cubes) | {speedup:.0f}x |"]
    lines += [f"| grain pretrain pipeline, batch {b} | {r:.0f} batches/s ({r * b:.0f} cubes/s) |"
              for b, r in rates.items()]
    lines += [f"| `data prepare`, {n} phantoms, write buffer {mb} MiB | peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"({r['examples']} cubes, {r['bytes'] / 2**20:.0f} MiB on disk) |" for (n, mb), r in rss.items()]
    out = REPO / "experiments" / "results" / f"bench_data_{device}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    print(f"extraction_speedup_vs_published: {speedup:.0f}x")


if __name__ == "__main__":
    main()
