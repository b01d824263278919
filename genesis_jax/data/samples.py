"""Real sample volumes from the TotalSegmentator 2.18.0 source distribution on PyPI (Apache-2.0).

The sdist (38,049,988 bytes, sha256 pinned below) ships real CT and MR volumes with TotalSegmentator's own label maps
under tests/reference_files/. ``fetch_samples`` downloads it once with pip (the wheel does not hold these files),
checks the sha256, copies the members listed in ``SAMPLES`` into the cache and writes a manifest last (so a half
extraction is never taken as done). The cache is ``$GENESIS_JAX_CACHE`` or ``~/.cache/genesis_jax``.

The labels are model outputs, not manual annotations: good as a real downstream target, to be called so wherever
results are shown. The class-id maps come from ``totalsegmentator/map_to_binary.py`` in the same sdist, parsed with
``ast`` (TotalSegmentator is never imported or installed).

Two more real chest CTs (``ct_lung1``, ``ct_lung2``: NRRD, with a nodule / tumour mask) come from the pyradiomics
3.0.1 sdist (BSD-3-Clause), fetched the same way by :func:`fetch_pyradiomics_samples` only when asked for: with the
TotalSegmentator scans that makes five CT patients obtainable offline, a small pre-training corpus.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genesis_jax.data.readers import Volume, check_same_grid, read_volume

SDIST_NAME = "totalsegmentator-2.18.0.tar.gz"
SDIST_REQUIREMENT = "TotalSegmentator==2.18.0"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
_PREFIX = "totalsegmentator-2.18.0/"
_REFERENCE = _PREFIX + "tests/reference_files/"
_CLASS_MAP_MEMBER = _PREFIX + "totalsegmentator/map_to_binary.py"
MANIFEST = "manifest.json"

# name -> members (relative to tests/reference_files/), the class map of its labels, modality, description.
SAMPLES: dict[str, dict[str, Any]] = {
    "ct_abdomen": dict(image="example_ct.nii.gz", label="example_seg_fast_force_split.nii.gz", classes="total",
                       modality="ct", description="CT abdomen/pelvis, 3.0 mm isotropic"),
    "ct_dicom": dict(image="example_ct_dicom", label="example_seg_dicom.nii.gz", classes="total", modality="ct",
                     description="CT abdomen, Siemens DICOM series (JPEG 2000), 0.98 x 0.98 x 2.0 mm"),
    "ct_chest": dict(image="aorta_report/example_ct.nii.gz", label="pulmonary_report/models/heart.nii.gz",
                     classes="heart_only", modality="ct", description="chest CT angiography, 1.5 mm isotropic"),
    "mr_abdomen": dict(image="example_mr_sm.nii.gz", label="example_seg_mr.nii.gz", classes="total_mr",
                       modality="mr", description="MR abdomen, 3.0 mm"),
}
_FIXED_CLASS_MAPS = {"heart_only": {1: "heart"}, "lung_lesion": {1: "lesion"}}

# The pyradiomics 3.0.1 sdist (3.1.0's data files are byte-identical; its name-based download fails on metadata).
PYRADIOMICS_SDIST = dict(name="pyradiomics-3.0.1.tar.gz", requirement="pyradiomics==3.0.1",
                         sha256="47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
                         pip_options=(("--no-build-isolation",), ()))
_PYRADIOMICS_DATA = "pyradiomics-3.0.1/data/"
PYRADIOMICS_SAMPLES: dict[str, dict[str, Any]] = {
    "ct_lung1": dict(image="lung1_image.nrrd", label="lung1_label.nrrd", classes="lung_lesion", modality="ct",
                     description="chest CT, 0.57 x 0.57 x 5.0 mm (pyradiomics lung1, nodule mask)"),
    "ct_lung2": dict(image="lung2_image.nrrd", label="lung2_label.nrrd", classes="lung_lesion", modality="ct",
                     description="chest CT, 0.63 x 0.63 x 5.0 mm (pyradiomics lung2, tumour mask)"),
}


class SampleDataUnavailable(RuntimeError):
    """The sample sdist could not be had (offline, or a bad download); the message says what to do."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else $GENESIS_JAX_CACHE, else ~/.cache/genesis_jax."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("GENESIS_JAX_CACHE", "~/.cache/genesis_jax")).expanduser()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _offline_help(root: Path, reason: str, name: str = SDIST_NAME, requirement: str = SDIST_REQUIREMENT,
                  sha256: str = SDIST_SHA256) -> str:
    return (f"could not get the sample data ({reason}).\n"
            f"To fix: on a machine that reaches PyPI run\n"
            f"    pip download --no-deps --no-binary :all: {requirement} -d DIR\n"
            f"and copy DIR/{name} (sha256 {sha256}) to {root / 'downloads'}/ "
            f"(or point GENESIS_JAX_CACHE at a cache that has it). Fully offline alternative: the synthetic phantom "
            f"(configs with source='synthetic', genesis_jax.data.phantom.synthetic_ct).")


def download_sdist(root: Path, *, timeout_s: int = 300, name: str = SDIST_NAME, requirement: str = SDIST_REQUIREMENT,
                   sha256: str = SDIST_SHA256, pip_options: tuple[tuple[str, ...], ...] = ((),)) -> Path:
    """The sdist ``name`` in ``root/downloads`` (downloaded with pip when absent), sha256-checked.

    ``pip_options``: extra pip arguments to try in turn (pyradiomics' sdist needs ``--no-build-isolation`` in an
    environment with numpy, since pip prepares an sdist's metadata and its setup.py imports numpy)."""
    target = root / "downloads" / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        failures = []
        for options in pip_options:
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", *options,
                       requirement, "-d", tmp, "--disable-pip-version-check", "--timeout", "30", "--retries", "2"]
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
                except (subprocess.TimeoutExpired, OSError) as err:
                    failures.append(f"pip download failed: {err}")
                    continue
                got = Path(tmp) / name
                if proc.returncode == 0 and got.exists():
                    os.replace(got, target)
                    break
                failures.append("pip download failed: " + " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]))
        else:
            raise SampleDataUnavailable(_offline_help(root, failures[-1], name, requirement, sha256))
    digest = _sha256(target)
    if digest != sha256:
        target.unlink()
        raise SampleDataUnavailable(_offline_help(root, f"{target} had sha256 {digest}, expected {sha256}; "
                                                        "the file was removed", name, requirement, sha256))
    return target


def parse_class_maps(source: str) -> dict[str, dict[int, str]]:
    """The top-level ``class_map = {...}`` literal of map_to_binary.py, without importing it."""
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "class_map"):
            return ast.literal_eval(node.value)
    raise ValueError("map_to_binary.py: no top-level `class_map = {...}` assignment found")


def _extract(sdist: Path, dest: Path) -> None:
    """Copy the members of SAMPLES and the class maps from the tarball into ``dest`` (member by member)."""
    wanted = {SAMPLES[n][k] for n in SAMPLES for k in ("image", "label")}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if member.name == _CLASS_MAP_MEMBER:
                maps = parse_class_maps(tar.extractfile(member).read().decode("utf-8"))
                keep = {k: {str(i): n for i, n in maps[k].items()} for k in ("total", "total_mr")}
                (dest / "class_maps.json").write_text(json.dumps(keep, indent=1))
                continue
            if not member.isfile() or not member.name.startswith(_REFERENCE):
                continue
            rel = member.name[len(_REFERENCE):]
            if not any(rel == w or rel.startswith(w + "/") for w in wanted) or ".." in Path(rel).parts:
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_pyradiomics(sdist: Path, dest: Path) -> None:
    wanted = {_PYRADIOMICS_DATA + spec[k] for spec in PYRADIOMICS_SAMPLES.values() for k in ("image", "label")}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                with tar.extractfile(member) as src, open(dest / Path(member.name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def _extract_once(sdist: Path, samples_dir: Path, extract: Any, name: str, sha256: str, names: Any) -> None:
    """Extract into a temporary sibling, write the manifest last, then swap it in: a half extraction is never taken
    as done."""
    samples_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=samples_dir.parent))
    try:
        extract(sdist, tmp)
        (tmp / MANIFEST).write_text(json.dumps({"sdist": name, "sha256": sha256, "samples": sorted(names)}, indent=1))
        if samples_dir.exists():
            shutil.rmtree(samples_dir)
        os.replace(tmp, samples_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def samples_cached(cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether the samples are already extracted in the cache (so :func:`fetch_samples` needs no network)."""
    return (cache_root(cache_dir) / "samples" / "totalsegmentator-2.18.0" / MANIFEST).exists()


def fetch_samples(cache_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Download (once), verify and extract the samples; return {name: {image, label, modality, classes, ...}}.

    ``image``/``label`` are absolute paths (``image`` of 'ct_dicom' is a DICOM directory); ``classes`` maps
    class id -> organ name. Raises SampleDataUnavailable with instructions when offline.
    """
    root = cache_root(cache_dir)
    samples_dir = root / "samples" / "totalsegmentator-2.18.0"
    if not samples_cached(cache_dir):
        _extract_once(download_sdist(root), samples_dir, _extract, SDIST_NAME, SDIST_SHA256, SAMPLES)
    class_maps = json.loads((samples_dir / "class_maps.json").read_text())
    out = {}
    for name, spec in SAMPLES.items():
        classes = _FIXED_CLASS_MAPS.get(spec["classes"]) or {int(i): n for i, n in class_maps[spec["classes"]].items()}
        out[name] = dict(image=str(samples_dir / spec["image"]), label=str(samples_dir / spec["label"]),
                         modality=spec["modality"], description=spec["description"], class_map=spec["classes"],
                         classes=classes)
    return out


def fetch_pyradiomics_samples(cache_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Download (once), verify and extract pyradiomics' two chest CTs; same return form as :func:`fetch_samples`."""
    root = cache_root(cache_dir)
    samples_dir = root / "samples" / "pyradiomics-3.0.1"
    if not (samples_dir / MANIFEST).exists():
        _extract_once(download_sdist(root, **PYRADIOMICS_SDIST), samples_dir, _extract_pyradiomics,
                      PYRADIOMICS_SDIST["name"], PYRADIOMICS_SDIST["sha256"], PYRADIOMICS_SAMPLES)
    return {name: dict(image=str(samples_dir / spec["image"]), label=str(samples_dir / spec["label"]),
                       modality=spec["modality"], description=spec["description"], class_map=spec["classes"],
                       classes=dict(_FIXED_CLASS_MAPS[spec["classes"]]))
            for name, spec in PYRADIOMICS_SAMPLES.items()}


def sample_info(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """{image, label, modality, classes, ...} of one sample of either sdist (fetched once when absent)."""
    if name in PYRADIOMICS_SAMPLES:
        return fetch_pyradiomics_samples(cache_dir)[name]
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; available: {', '.join([*SAMPLES, *PYRADIOMICS_SAMPLES])}")
    return fetch_samples(cache_dir)[name]


def load_sample(name: str, cache_dir: str | os.PathLike | None = None) -> Volume:
    """The image of sample ``name`` as a canonical Volume (HU for CT)."""
    return read_volume(sample_info(name, cache_dir)["image"])


def load_sample_label(name: str, cache_dir: str | os.PathLike | None = None) -> Volume:
    """The label map of sample ``name`` on the image's grid (checked)."""
    info = sample_info(name, cache_dir)
    label = read_volume(info["label"], kind="label")
    check_same_grid(read_volume(info["image"]), label)
    return label


def class_id(name: str, organ: str, cache_dir: str | os.PathLike | None = None) -> int:
    classes = sample_info(name, cache_dir)["classes"]
    for i, n in classes.items():
        if n == organ:
            return int(i)
    raise KeyError(f"sample {name!r} has no class {organ!r}; its classes: {sorted(set(classes.values()))}")


def organ_mask(name: str, organ: str, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Boolean (X, Y, Z) mask of ``organ`` on the sample image's grid."""
    return load_sample_label(name, cache_dir).array == class_id(name, organ, cache_dir)


def liver_mask(name: str = "ct_abdomen", cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Boolean liver mask of a sample CT ('ct_abdomen' or 'ct_dicom'; 'mr_abdomen' also has one)."""
    return organ_mask(name, "liver", cache_dir)
