"""NRRD (.nrrd, single file, raw or gzip encoded): read and written without pynrrd.

The header is ``field: value`` text after a ``NRRD000N`` magic line, ended by an empty line; the voxels follow in
the same file. Disk order is the first axis fastest, so the array comes back in index order (x, y, z). World
coordinates are given by ``space`` (left-posterior-superior, the usual case, or right-anterior-superior),
``space directions`` (one vector per axis, spacing included) and ``space origin``; ``read_nrrd`` returns a RAS
affine, ready for ``readers.to_canonical``. The size the header claims is checked before anything is allocated
(against the file size for raw data, and while inflating for gzip), so a lying header cannot grow the process.
``write_nrrd`` exists for tests and conversions.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from genesis_jax.data.errors import VolumeError

_TYPES = {
    "signed char": np.int8, "int8": np.int8, "int8_t": np.int8, "uchar": np.uint8, "unsigned char": np.uint8,
    "uint8": np.uint8, "uint8_t": np.uint8, "short": np.int16, "short int": np.int16, "signed short": np.int16,
    "int16": np.int16, "int16_t": np.int16, "ushort": np.uint16, "unsigned short": np.uint16, "uint16": np.uint16,
    "uint16_t": np.uint16, "int": np.int32, "signed int": np.int32, "int32": np.int32, "int32_t": np.int32,
    "uint": np.uint32, "unsigned int": np.uint32, "uint32": np.uint32, "uint32_t": np.uint32,
    "longlong": np.int64, "long long": np.int64, "int64": np.int64, "int64_t": np.int64,
    "ulonglong": np.uint64, "unsigned long long": np.uint64, "uint64": np.uint64, "uint64_t": np.uint64,
    "float": np.float32, "double": np.float64,
}
_SPACE_TO_RAS = {
    "left-posterior-superior": np.diag([-1.0, -1.0, 1.0]), "lps": np.diag([-1.0, -1.0, 1.0]),
    "right-anterior-superior": np.eye(3), "ras": np.eye(3),
}
MAX_HEADER_BYTES = 1 << 20


def _split_header(raw: bytes, path: Path) -> tuple[dict[str, str], int]:
    if not raw.startswith(b"NRRD000"):
        raise VolumeError(f"{path}: not an NRRD file (no NRRD000N magic line)")
    end = raw.find(b"\n\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise VolumeError(f"{path}: NRRD header has no terminating empty line (truncated, or data in a detached file)")
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        if ":=" in line:  # key/value pairs carry no geometry
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise VolumeError(f"{path}: malformed NRRD header line {line!r}")
        fields[key.strip().lower()] = value.strip()
    return fields, end + 2


def _vectors(text: str, path: Path, what: str) -> list[list[float] | None]:
    out: list[list[float] | None] = []
    for token in re.findall(r"\([^)]*\)|none", text):
        if token == "none":
            out.append(None)
            continue
        try:
            out.append([float(v) for v in token.strip("()").split(",")])
        except ValueError:
            raise VolumeError(f"{path}: NRRD field {what} = {text!r} is not numeric") from None
    return out


def _geometry(fields: dict[str, str], ndim: int, path: Path) -> np.ndarray:
    """4x4 RAS affine from ``space``/``space directions``/``space origin`` (or ``spacings``), identity-like else."""
    affine = np.eye(4)
    to_ras = _SPACE_TO_RAS.get(fields.get("space", "").lower(), np.eye(3))
    if "space" in fields and fields["space"].lower() not in _SPACE_TO_RAS:
        raise VolumeError(f"{path}: NRRD space {fields['space']!r} is not supported "
                          f"(expected one of {', '.join(sorted(_SPACE_TO_RAS))})")
    if "space directions" in fields:
        vectors = [v for v in _vectors(fields["space directions"], path, "space directions") if v is not None]
        if len(vectors) != 3 or any(len(v) != 3 for v in vectors):
            raise VolumeError(f"{path}: NRRD space directions must give three 3-vectors for a 3D volume")
        affine[:3, :3] = to_ras @ np.asarray(vectors, dtype=np.float64).T
    elif "spacings" in fields:
        try:
            spacing = [float(v) for v in fields["spacings"].split()][:ndim]
        except ValueError:
            raise VolumeError(f"{path}: NRRD spacings {fields['spacings']!r} are not numeric") from None
        affine[:3, :3] = np.diag([s if math.isfinite(s) else 1.0 for s in spacing])
    if "space origin" in fields:
        origin = _vectors(fields["space origin"], path, "space origin")
        if len(origin) != 1 or origin[0] is None or len(origin[0]) != 3:
            raise VolumeError(f"{path}: NRRD space origin must be one 3-vector")
        affine[:3, 3] = to_ras @ np.asarray(origin[0], dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path}: NRRD geometry is degenerate (zero or non-finite space directions)")
    return affine


def _inflate(payload: bytes, limit: int, path: Path) -> bytes:
    """gzip/zlib data, refusing to inflate past ``limit`` bytes (a lying header, or a gzip bomb)."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, auto-detected
    try:
        data = inflater.decompress(payload, limit + 1)
    except zlib.error as err:
        raise VolumeError(f"{path}: NRRD gzip data cannot be decompressed ({err}); truncated or corrupt") from None
    if len(data) > limit:
        raise VolumeError(f"{path}: NRRD data inflate past the {limit:,} bytes its header describes")
    return data


def read_nrrd(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (array in index order (x, y, z), 4x4 RAS affine). Raises VolumeError naming the file."""
    path = Path(path)
    raw = path.read_bytes()
    fields, offset = _split_header(raw, path)
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise VolumeError(f"{path}: NRRD header lacks the required field {key!r}")
    if "data file" in fields or "datafile" in fields:
        raise VolumeError(f"{path}: detached NRRD data files are not supported (save it as a single .nrrd)")
    type_name = fields["type"].lower()
    if type_name not in _TYPES:
        raise VolumeError(f"{path}: unsupported NRRD type {fields['type']!r}")
    try:
        ndim = int(fields["dimension"])
        sizes = [int(v) for v in fields["sizes"].split()]
    except ValueError:
        raise VolumeError(f"{path}: NRRD dimension/sizes are not integers") from None
    if len(sizes) != ndim or any(s < 1 for s in sizes):
        raise VolumeError(f"{path}: NRRD sizes {sizes} do not give {ndim} positive sizes")
    dtype = np.dtype(_TYPES[type_name])
    if dtype.itemsize > 1 and fields.get("endian", "little").lower() == "big":
        dtype = dtype.newbyteorder(">")
    expected = math.prod(sizes) * dtype.itemsize
    encoding = fields["encoding"].lower()
    payload = raw[offset:]
    if encoding == "raw":
        if len(payload) < expected:
            raise VolumeError(f"{path}: the NRRD header describes {sizes} voxels of {type_name} ({expected:,} bytes) "
                              f"but the file holds {len(payload):,}: truncated, or a wrong header")
        data = payload[len(payload) - expected:]  # raw data may follow extra header bytes ("line skip"/"byte skip")
    elif encoding in ("gzip", "gz"):
        data = _inflate(payload, expected, path)
        if len(data) != expected:
            raise VolumeError(f"{path}: the NRRD header describes {expected:,} bytes of voxels, the gzip data "
                              f"hold {len(data):,}: truncated or corrupt")
    else:
        raise VolumeError(f"{path}: NRRD encoding {fields['encoding']!r} is not supported (raw or gzip)")
    array = np.frombuffer(data, dtype=dtype).reshape(sizes[::-1]).transpose(tuple(range(ndim))[::-1])
    array = array.astype(dtype.newbyteorder("="), copy=False)
    if ndim != 3:
        return array, np.eye(4)  # the reader rejects non-3D arrays with a clear message
    return array, _geometry(fields, ndim, path)


def write_nrrd(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
               origin: Sequence[float] = (0.0, 0.0, 0.0), *, gzip_data: bool = True) -> Path:
    """Write a 3D ``array`` (index order (x, y, z)) as a single-file LPS NRRD with an axis-aligned grid."""
    path = Path(path)
    array = np.asarray(array)
    names = {np.dtype(v): k for k, v in reversed(list(_TYPES.items()))}
    if array.ndim != 3 or array.dtype not in names:
        raise ValueError(f"write_nrrd: a 3D array of a plain numeric dtype is needed, got {array.shape} {array.dtype}")
    payload = np.ascontiguousarray(array.transpose(2, 1, 0)).astype(array.dtype.newbyteorder("<")).tobytes()
    if gzip_data:
        packer = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        payload = packer.compress(payload) + packer.flush()
    directions = " ".join(f"({','.join(f'{s if i == j else 0:g}' for j in range(3))})" for i, s in enumerate(spacing))
    header = "\n".join([
        "NRRD0004", f"type: {names[array.dtype]}", "dimension: 3", "space: left-posterior-superior",
        "sizes: " + " ".join(str(s) for s in array.shape), f"space directions: {directions}",
        "kinds: domain domain domain", "endian: little", f"encoding: {'gzip' if gzip_data else 'raw'}",
        "space origin: (" + ",".join(f"{v:g}" for v in origin) + ")",
    ]) + "\n\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode("latin-1") + payload)
    return path
