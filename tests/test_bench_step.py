"""experiments/bench_step.py, the step benchmark against PyTorch, runs both of its networks (the Genesis U-Net
against the UNet3D restatement, ResEnc against dynamic-network-architectures) at a tiny size and writes its table
and one summary line per network."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_step_times_both_networks_against_pytorch(tmp_path):
    pytest.importorskip("torch", reason="the benchmark's other side is PyTorch")
    pytest.importorskip("dynamic_network_architectures", reason="the ResEnc rows need dynamic-network-architectures")
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "experiments/bench_step.py"), "--configs", "2:16,16,16:1", "tiny:16,16,16:1",
         "--dtypes", "float32", "--rounds", "1", "--warmup", "1", "--torch-threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("step_speed_vs_pytorch: ") and last[1].startswith("resenc_step_speed_vs_pytorch: ")
    table = out.read_text()
    assert "| Genesis U-Net, width 2 | 16x16x16 | 1 | float32 |" in table and "| ResEnc tiny | 16x16x16 | 1 |" in table
    assert "PARTIAL" not in table and "Device:" in table


def test_bench_step_refuses_a_bad_row_in_one_line():
    proc = subprocess.run([sys.executable, str(REPO / "experiments/bench_step.py"), "--configs", "L:64,64:2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is not NET:X,Y,Z:BATCH" in proc.stderr
