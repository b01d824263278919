"""The faults of issue 25 (bad inputs, resource faults, kills), each fed to the real code path: real files, real
processes where it is about kills or concurrency, and a full disk simulated deterministically (a fault-injecting
writer everywhere; a small tmpfs as well where this user may mount one).

1 corrupt DICOM slices, 2 bad affines, 3 weights read during a re-export, 4 atomic .pt writes, 5 full disk,
6 lying .nii.gz headers, 7 networks too large for memory, 8 unlistable folders / missing segmentations / complex
voxels, 9 `al step` rerun after its commit and SIGTERM during the first compile.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from genesis_jax.cli import main
from genesis_jax.data.readers import VolumeError, read_volume
from tests.data.helpers import write_nifti
from tests.train.helpers import REPO, TINY_OVERRIDES, driver_env

CUBES = ["--config=data/genesis_cubes:directory", "--config.data.cubes.cube_shape=(16,16,8)",
         "--config.data.cubes.margins=(2,2,1)", "--config.data.cubes.cubes_per_scan=4",
         "--config.data.cubes.criterion=foreground", "--config.data.cubes.foreground_threshold=0.1",
         "--config.data.validation_fraction=0.0"]
PRETRAIN = ["pretrain", "--config=pretrain/genesis_chest_ct:tiny", *TINY_OVERRIDES]
ACTIVE_TINY = [
    "--config=active/acft:tiny", "--config.pool.n=40", "--config.pool.context_size=6",
    "--config.patches.patch_shape=(4, 4, 4)", "--config.patches.box_shape=(4, 4, 4)", "--config.model.depth=1",
    "--config.model.hidden=8", "--config.learner.batch_size=8", "--config.learner.calibration_size=16",
    "--config.learner.min_steps=5", "--config.learner.max_steps=10", "--config.learner.bucket_min=16",
    "--config.learner.chunk_size=64", "--config.learner.device_batch=16",
]
CRASH_DRIVER = REPO / "tests" / "train" / "crash_driver.py"


def ct_volume(shape=(28, 28, 12), seed=0) -> np.ndarray:
    """HU-like int16 voxels with a bright body in the middle (the foreground criterion finds cubes in it)."""
    rng = np.random.default_rng(seed)
    volume = np.full(shape, -1000, np.int16)
    volume[3:-3, 3:-3, 1:-1] = rng.integers(-100, 300, (shape[0] - 6, shape[1] - 6, shape[2] - 2))
    return volume


def write_dicom_series(directory: Path, volume: np.ndarray) -> list[Path]:
    """One CT series, one file per slice (slice k at z = k mm), named in slice order."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    series, paths = generate_uid(), []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = series, "CT"
        ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, float(k)]
        ds.PixelSpacing, ds.Rows, ds.Columns = [1.0, 1.0], volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).tobytes()
        path = directory / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def corrupt_after_marker(path: Path) -> None:
    """Keep the 128-byte preamble and the DICM marker, garbage after it (what a damaged copy looks like)."""
    data = bytearray(path.read_bytes())
    data[132:600] = np.random.default_rng(1).bytes(468)
    path.write_bytes(bytes(data))


def nifti_with_srow(path: Path, srow: np.ndarray) -> Path:
    """A NIfTI whose sform is patched in the header bytes (nibabel refuses to write a singular affine)."""
    write_nifti(path, ct_volume())
    block = bytearray(path.read_bytes())
    block[252:256] = np.array([0, 1], np.int16).tobytes()  # qform_code 0, sform_code 1
    block[280:328] = np.asarray(srow, np.float32).tobytes()
    path.write_bytes(bytes(block))
    return path


def lying_gz(path: Path) -> Path:
    """A 400-byte .nii.gz whose header claims 2048^3 int16 voxels (8 GiB)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((2048, 2048, 2048))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header.binaryblock + bytes(52)))
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    return lines[0]


def cli(*argv: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `genesis-jax` command in a process of its own (what a user runs: stderr as the terminal shows it)."""
    return subprocess.run([sys.executable, "-m", "genesis_jax.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**driver_env(devices=1), **(env or {})})


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kib)``: a fresh tmpfs of that size (skipped where this user cannot mount one)."""
    mounted: list[Path] = []

    def make(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (not root); the fault-injecting tests cover this path")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


# --- 1, 2, 6, 8: bad scans ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_corrupt_dicom_slice_is_named_wherever_it_lies(tmp_path, position):
    slices = write_dicom_series(tmp_path / "series", ct_volume())
    bad = slices[{"first": 0, "middle": len(slices) // 2, "last": -1}[position]]
    corrupt_after_marker(bad)
    with pytest.raises(VolumeError, match=rf"{bad.name}: cannot read DICOM .*truncated or corrupt"):
        read_volume(tmp_path / "series")


def test_a_corrupt_last_slice_stops_data_prepare_under_on_error_raise(tmp_path, capsys):
    bad = write_dicom_series(tmp_path / "in" / "series", ct_volume())[-1]
    corrupt_after_marker(bad)
    rc = main(["data", "prepare", *CUBES, f"--config.data.manual_dir={tmp_path / 'in'}",
               "--config.data.on_error=raise", f"--config.data.data_dir={tmp_path / 'tfds'}"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and str(bad) in line and "on_error='raise'" in line, line


@pytest.mark.parametrize("srow,reason", [(np.zeros(12), "singular"), (np.full(12, np.nan), "NaN")],
                         ids=["zero_affine", "nan_affine"])
def test_a_bad_affine_is_refused_by_name(tmp_path, srow, reason):
    path = nifti_with_srow(tmp_path / "scan.nii", srow)
    with pytest.raises(VolumeError, match=rf"{path.name}: the voxel-to-world affine .*{reason}"):
        read_volume(path)


def test_complex_voxels_are_refused_by_name(tmp_path):
    path = write_nifti(tmp_path / "complex.nii.gz", (ct_volume() + 1j).astype(np.complex64))
    with pytest.raises(VolumeError, match=r"complex.nii.gz: complex-valued voxels"):
        read_volume(path)


def test_a_gz_header_claiming_8_gib_is_refused_before_allocating(tmp_path):
    path = lying_gz(tmp_path / "liar.nii.gz")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(VolumeError, match=r"liar.nii.gz: the header describes \(2048, 2048, 2048\) voxels"):
        read_volume(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024  # KiB: nothing near 8 GiB
    os.environ["GENESIS_JAX_MAX_VOLUME_BYTES"] = str(2**20)  # the limit is stated, and can be set
    try:
        with pytest.raises(VolumeError, match=r"more than the 1,048,576 bytes a volume may take here"):
            read_volume(path)
    finally:
        del os.environ["GENESIS_JAX_MAX_VOLUME_BYTES"]


def test_a_mixed_folder_is_prepared_with_every_bad_scan_skipped_and_named(tmp_path):
    """One `data prepare` (default on_error=skip) over a good scan and the bad ones: each bad one is named with its
    reason, the build finishes, and the console holds no library noise."""
    root = tmp_path / "in"
    write_nifti(root / "good.nii.gz", ct_volume())
    bad = {
        "zero": nifti_with_srow(root / "zero_affine.nii", np.zeros(12)),
        "nan": nifti_with_srow(root / "nan_affine.nii", np.full(12, np.nan)),
        "complex": write_nifti(root / "complex.nii.gz", (ct_volume() + 1j).astype(np.complex64)),
        "liar": lying_gz(root / "liar.nii.gz"),
    }
    slices = write_dicom_series(root / "dicom" / "series", ct_volume())
    corrupt_after_marker(slices[0])
    bad["dicom"] = slices[0]
    proc = cli("data", "prepare", *CUBES, f"--config.data.manual_dir={root}", f"--config.data.data_dir={tmp_path}/t")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, path in bad.items():
        assert str(path) in proc.stdout, (name, proc.stdout)
    assert "scans read: 1 " in proc.stdout and f"skipped: {len(bad)}" in proc.stdout, proc.stdout
    assert "Variant folder" not in proc.stderr and "Downloading and preparing" not in proc.stdout
    assert "Traceback" not in proc.stderr and "ComplexWarning" not in proc.stderr, proc.stderr[-3000:]


def test_an_unlistable_sub_folder_is_skipped_and_named_or_stops_the_build(tmp_path, monkeypatch, capsys):
    root = tmp_path / "in"
    write_nifti(root / "a" / "scan.nii.gz", ct_volume())
    write_nifti(root / "b" / "scan.nii.gz", ct_volume(seed=1))
    locked = root / "b"
    locked.chmod(0o000)
    if os.geteuid() == 0:  # root lists a 0000 folder: make listing it fail as it does for everyone else
        real_scandir = os.scandir

        def scandir(path="."):
            if isinstance(path, (str, os.PathLike)) and Path(path) == locked:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        data = [*CUBES, f"--config.data.manual_dir={root}"]
        assert main(["data", "prepare", *data, f"--config.data.data_dir={tmp_path / 't1'}"]) == 0
        out = capsys.readouterr().out
        assert "skipped: 1" in out and f"  - {locked}: cannot list the folder" in out, out
        rc = main(["data", "prepare", *data, "--config.data.on_error=raise", f"--config.data.data_dir={tmp_path / 't2'}"])
        line = one_error_line(capsys.readouterr().err)
        assert rc == 1 and f"{locked}: cannot list the folder" in line, line
    finally:
        locked.chmod(0o755)


def test_on_error_raise_stops_a_lits_build_with_a_missing_segmentation(tmp_path, capsys):
    root = tmp_path / "lits"
    for i in (0, 1):
        write_nifti(root / f"volume-{i}.nii", ct_volume(seed=i))
    write_nifti(root / "segmentation-0.nii", (ct_volume() > 0).astype(np.uint8))
    rc = main(["data", "prepare", "--config=data/downstream:lits", f"--config.data.manual_dir={root}",
               "--config.data.on_error=raise", f"--config.data.data_dir={tmp_path / 't'}"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 1 and f"{root / 'volume-1.nii'}: no segmentation-1.nii[.gz] beside it" in line, line


# --- 3: weights read while a re-export swaps them in -------------------------------------------------------------

_EXPORTER = """
import sys, numpy as np
from genesis_jax.models.weights import save_weights
target, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    v = float(i % 2)
    save_weights(target, {"params": {"w": np.full(4096, v, np.float32)}}, {"name": "x"}, {"version": v})
print("exported", rounds)
"""

_READER = """
import sys, collections, pathlib
from genesis_jax.models.weights import load_weights
target, stop = sys.argv[1], pathlib.Path(sys.argv[2])
seen = collections.Counter()
while not stop.exists():  # the test creates it when the exports are done
    try:
        variables, _, metadata = load_weights(target)
    except Exception as err:
        seen["ERROR " + type(err).__name__ + ": " + str(err)[:200]] += 1
        continue
    values = set(variables["params"]["w"].tolist())
    seen["ok" if values == {metadata["version"]} else f"MIXED {values} vs {metadata['version']}"] += 1
print(dict(seen))
"""


def test_weights_stay_readable_while_a_re_export_swaps_them_in(tmp_path):
    """A reader process loads weights/ in a loop (what `finetune --init` does) while another process re-exports
    it 40 times: every read is one whole export, never an error or a mixture."""
    target = tmp_path / "weights"
    env = driver_env(devices=1)
    subprocess.run([sys.executable, "-c", _EXPORTER, str(target), "1"], cwd=REPO, env=env, check=True, timeout=120)
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(target), str(stop)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        writer = subprocess.run([sys.executable, "-c", _EXPORTER, str(target), "40"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        stop.touch()
        out, err = reader.communicate(timeout=120)
    finally:
        reader.kill()
    assert writer.returncode == 0, writer.stderr[-2000:]
    assert reader.returncode == 0, err[-2000:]
    seen = eval(out.strip().splitlines()[-1])  # noqa: S307 (our own process's dict of counters)
    assert set(seen) == {"ok"} and seen["ok"] > 20, seen


# --- 4, 5: atomic writes and a full disk -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pytorch_weights(tmp_path_factory) -> Path:
    """A 'pytorch'-variant U-Net's weights directory (base width 8: its .pt is about 250 KiB)."""
    import jax

    from genesis_jax.models import build_model
    from genesis_jax.models.weights import save_weights

    model_config = {"name": "genesis_unet", "variant": "pytorch", "base_width": 8, "depth": 2, "num_classes": 1}
    variables = build_model(model_config).init(jax.random.key(0), np.zeros((1, 16, 16, 8, 1), np.float32),
                                               train=False)
    return save_weights(tmp_path_factory.mktemp("pt") / "weights", dict(variables), model_config)


def test_a_failed_pt_export_leaves_nothing_and_the_rerun_works(pytorch_weights, tmp_path, monkeypatch, capsys):
    destination = tmp_path / "out" / "w.pt"
    real_write = Path.write_bytes

    def full_disk(self, data):  # the first bytes land, then the disk is full
        real_write(self, bytes(data)[:4096])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    rc = main(["convert", f"--from={pytorch_weights}", f"--to={destination}"])
    line = one_error_line(capsys.readouterr().err)
    assert rc != 0 and f"no space left on {destination}" in line, line
    assert list(destination.parent.iterdir()) == []  # no truncated .pt, no temporary file
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert main(["convert", f"--from={pytorch_weights}", f"--to={destination}"]) == 0  # no "already exists"
    import torch

    assert "state_dict" in torch.load(destination, weights_only=True)


def test_pt_export_onto_a_real_full_disk(pytorch_weights, small_disk):
    disk = small_disk(64)
    proc = cli("convert", f"--from={pytorch_weights}", f"--to={disk / 'w.pt'}")
    line = one_error_line(proc.stderr)
    assert proc.returncode != 0 and f"no space left on {disk / 'w.pt'}" in line, line
    assert list(disk.iterdir()) == []


def test_convert_import_onto_a_full_disk_is_one_line(pytorch_weights, small_disk, tmp_path):
    pt = tmp_path / "w.pt"
    assert main(["convert", f"--from={pytorch_weights}", f"--to={pt}"]) == 0
    disk = small_disk(64)
    proc = cli("convert", f"--from={pt}", f"--to={disk / 'w'}")
    line = one_error_line(proc.stderr)
    assert proc.returncode != 0 and "no space left on" in line and "ERROR:absl" not in proc.stderr, proc.stderr


def test_data_prepare_on_a_full_disk_names_the_dataset(tmp_path, small_disk):
    write_nifti(tmp_path / "in" / "scan.nii.gz", ct_volume((40, 40, 16)))
    disk = small_disk(32)
    proc = cli("data", "prepare", *CUBES, f"--config.data.manual_dir={tmp_path / 'in'}",
               f"--config.data.data_dir={disk}")
    line = one_error_line(proc.stderr)
    assert proc.returncode != 0 and f"no space left on {disk}/genesis_cubes/default" in line, line


def test_a_full_disk_while_data_prepare_writes_names_the_dataset(tmp_path, monkeypatch, capsys):
    from genesis_jax.data import prepare as prepare_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no path, as the ArrayRecord writer says it

    monkeypatch.setattr(prepare_module, "_build", full)
    write_nifti(tmp_path / "in" / "scan.nii.gz", ct_volume())
    rc = main(["data", "prepare", *CUBES, f"--config.data.manual_dir={tmp_path / 'in'}",
               f"--config.data.data_dir={tmp_path / 'tfds'}"])
    line = one_error_line(capsys.readouterr().err)
    assert rc != 0 and f"no space left on {tmp_path / 'tfds'}/genesis_cubes/default" in line, line


def test_a_nifti_prediction_on_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    from genesis_jax.evaluation.sliding_window import save_nifti
    from genesis_jax.workdir import DiskFullError

    real_save = nib.save

    def half_then_full(image, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nib, "save", half_then_full)
    target = tmp_path / "out" / "case_prob.nii.gz"
    with pytest.raises(DiskFullError, match=rf"no space left on {target}"):
        save_nifti(np.zeros((8, 8, 4), np.float32), np.eye(4), target)
    assert list(target.parent.iterdir()) == []
    monkeypatch.setattr(nib, "save", real_save)
    assert save_nifti(np.ones((8, 8, 4), np.float32), np.eye(4), target).is_file()
    assert nib.load(target).shape == (8, 8, 4)


def test_check_reports_a_failed_background_save_before_the_next_save(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from genesis_jax.cli._logging import quiet_libraries
    from genesis_jax.models.weights import CheckpointError
    from genesis_jax.train.checkpointing import TrainCheckpoints

    async def full_disk(self, x, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    quiet_libraries()  # as under the CLI: its noise filter must not hide the failure
    ckpts = TrainCheckpoints(tmp_path, async_save=True)
    ckpts.save(3, {"w": np.zeros(8, np.float32)}, meta={"step": 3})
    deadline = time.time() + 60
    with pytest.raises(CheckpointError, match=rf"no space left on {tmp_path}: writing the checkpoint of step 3"):
        while time.time() < deadline:
            ckpts.check()
            time.sleep(0.05)
    ckpts.close()


def test_an_asynchronous_checkpoint_failure_stops_training_at_once(tmp_path):
    """A real pretrain whose checkpoint at step 20 fails in orbax's background writer (ENOSPC injected by the crash
    driver): it stops at the next step with one line naming the workdir, not at the end of the run."""
    workdir = tmp_path / "run"
    argv = [*PRETRAIN, "--config.max_steps=60", "--config.checkpoint.every_steps=20", "--config.steps_per_epoch=10",
            "--config.checkpoint.async_save=True", f"--workdir={workdir}"]
    proc = subprocess.run([sys.executable, str(CRASH_DRIVER), json.dumps({"argv": argv, "disk_full_from_step": 20})],
                          cwd=REPO, env=driver_env(devices=1), capture_output=True, text=True, timeout=400)
    errors = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("pretrain: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0].startswith(f"genesis-jax pretrain: no space left on {workdir}: writing the checkpoint"), errors
    steps = [int(line.split(",")[0]) for line in (workdir / "metrics.csv").read_text().splitlines()[1:]]
    # stopped within a few steps of the failure; without the check it ran on to the next save (best, at 30)
    assert max(steps) <= 25, max(steps)
    assert (workdir / "progress.png").stat().st_size > 0  # drawn at the validations (every 10 steps)


# --- 7: a network too large for memory --------------------------------------------------------------------------

def test_a_network_too_large_for_memory_is_refused_before_compiling(tmp_path, capsys):
    started = time.time()
    rc = main([*PRETRAIN, f"--workdir={tmp_path / 'w'}", "--config.model.base_width=100000"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2 and "config.model.base_width=100000" in line and "nothing was compiled" in line, line
    assert time.time() - started < 120
    assert not (tmp_path / "w" / "checkpoints").is_dir() or not any((tmp_path / "w" / "checkpoints").iterdir())


# --- 9: kills and signals ---------------------------------------------------------------------------------------

def test_al_step_killed_after_its_commit_reruns_as_done(tmp_path, capsys):
    import csv

    from genesis_jax.active import session
    from genesis_jax.active import state as st
    from genesis_jax.config_loader import load_config

    config = load_config(ACTIVE_TINY[0].split("=", 1)[1], ACTIVE_TINY[1:])
    wd = tmp_path / "al"
    rows = list(csv.DictReader(session.select(config, wd, budget=6)["csv"].open()))
    pool = session.build_pool(config.pool)
    oracle = dict(zip(pool.ids.tolist(), pool.labels.tolist()))
    with open(tmp_path / "ann.csv", "w", newline="") as f:
        f.write("id,label\n" + "".join(f"{r['id']},{oracle[r['id']]}\n" for r in rows))
    st.import_annotations(wd, tmp_path / "ann.csv")

    proc = cli("al", "step", *ACTIVE_TINY, f"--workdir={wd}", env={"GENESIS_JAX_CRASH_AT": "al_commit"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert st.load_state(wd).round == 1 and not (wd / "scores" / "round_0001.npz").exists()

    assert main(["al", "step", *ACTIVE_TINY, f"--workdir={wd}"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("round 1: already trained (models/round_0001"), out
    assert (wd / "scores" / "round_0001.npz").is_file() and (wd / "progress.png").stat().st_size > 0
    assert len(st.load_state(wd).history) == 1  # nothing retrained


def test_sigterm_during_the_first_compile_exits_within_seconds(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genesis_jax.cli", *PRETRAIN, f"--workdir={workdir}"],
                            cwd=REPO, env=driver_env(devices=1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:  # the line printed just before the first step is dispatched
            if "steps/epoch" in line:
                break
        signalled = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        waited = time.time() - signalled
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert rc == 0 and waited < 10, (rc, waited, err[-2000:])
    assert "SIGTERM received before the first step" in err, err[-2000:]
    checkpoints = workdir / "checkpoints"
    assert not checkpoints.is_dir() or not [p for p in checkpoints.iterdir() if p.name.isdigit()]
