"""MetaImage (.mhd + .raw, or single-file .mha): LUNA16's format, read and written without SimpleITK.

The header is ``Key = Value`` text. World coordinates in MetaImage/ITK are LPS (mm); ``read_metaimage`` returns the
array in ITK index order (x fastest on disk -> array axes (x, y, z)) with a RAS affine, ready for
``readers.to_canonical``. ``TransformMatrix`` holds the direction cosines of axis 0, then axis 1, then axis 2 (the
columns of the direction matrix), as ITK writes them. ``write_metaimage`` exists for tests and conversions.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from genesis_jax.data.errors import VolumeError

_ELEMENT_TYPES = {
    "MET_CHAR": np.int8, "MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_USHORT": np.uint16,
    "MET_INT": np.int32, "MET_UINT": np.uint32, "MET_LONG": np.int64, "MET_ULONG": np.uint64,
    "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _parse_header(text: str, path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise VolumeError(f"{path}: malformed MetaImage header line {line!r}")
        header[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break  # for .mha the binary data follows this line
    return header


def _floats(header: dict[str, str], keys: Sequence[str], default: Sequence[float], path: Path) -> np.ndarray:
    for key in keys:
        if key in header:
            try:
                return np.array([float(v) for v in header[key].split()])
            except ValueError:
                raise VolumeError(f"{path}: header field {key} = {header[key]!r} is not numeric") from None
    return np.asarray(default, dtype=np.float64)


def read_metaimage(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (array in index order (x, y, z), 4x4 RAS affine). Raises VolumeError naming the file."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix.lower() == ".mha":
        marker = raw.find(b"ElementDataFile")
        if marker < 0:
            raise VolumeError(f"{path}: not a MetaImage file (no ElementDataFile field)")
        end = raw.find(b"\n", marker)
        end = len(raw) if end < 0 else end + 1
        header_text, payload_offset = raw[:end].decode("latin-1"), end
    else:
        header_text, payload_offset = raw.decode("latin-1", errors="replace"), None
    header = _parse_header(header_text, path)
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in header:
            raise VolumeError(f"{path}: MetaImage header lacks the required field {key}")
    ndims = int(header["NDims"])
    dims = [int(v) for v in header["DimSize"].split()]
    if len(dims) != ndims:
        raise VolumeError(f"{path}: DimSize {dims} does not have NDims={ndims} entries")
    if header["ElementType"] not in _ELEMENT_TYPES:
        raise VolumeError(f"{path}: unsupported ElementType {header['ElementType']}")
    if int(header.get("ElementNumberOfChannels", "1")) != 1:
        raise VolumeError(f"{path}: multi-channel MetaImage is not supported")
    dtype = np.dtype(_ELEMENT_TYPES[header["ElementType"]])
    if header.get("BinaryDataByteOrderMSB", header.get("ElementByteOrderMSB", "False")).lower() == "true":
        dtype = dtype.newbyteorder(">")
    if header["ElementDataFile"] == "LOCAL":
        data = raw[payload_offset:] if payload_offset is not None else b""
    else:
        data_path = path.parent / header["ElementDataFile"]
        if not data_path.exists():
            raise VolumeError(f"{path}: its data file {data_path} does not exist")
        data = data_path.read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        try:
            data = zlib.decompress(data)
        except zlib.error as err:
            raise VolumeError(f"{path}: compressed data cannot be decompressed ({err}); truncated?") from None
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise VolumeError(f"{path}: expected {expected} bytes of voxel data for DimSize {dims} "
                          f"{header['ElementType']}, found {len(data)} (truncated or corrupt)")
    # Disk order is x fastest: reshape to (z, y, x) then transpose to index order (x, y, z).
    array = np.frombuffer(data, dtype=dtype).reshape(dims[::-1]).transpose(tuple(range(ndims))[::-1])
    array = array.astype(dtype.newbyteorder("="), copy=False)
    if ndims != 3:
        return array, np.eye(4)  # the reader rejects non-3D arrays with a clear message
    spacing = _floats(header, ("ElementSpacing", "ElementSize"), (1.0, 1.0, 1.0), path)
    origin = _floats(header, ("Offset", "Origin", "Position"), (0.0, 0.0, 0.0), path)
    direction = _floats(header, ("TransformMatrix", "Rotation", "Orientation"), np.eye(3).ravel(), path)
    if spacing.size != 3 or origin.size != 3 or direction.size != 9:
        raise VolumeError(f"{path}: ElementSpacing/Offset/TransformMatrix must have 3/3/9 values")
    lps = np.eye(4)
    lps[:3, :3] = direction.reshape(3, 3).T * spacing[None, :]
    lps[:3, 3] = origin
    return array, _LPS_TO_RAS @ lps


def write_metaimage(path: str | os.PathLike, array: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                    origin: Sequence[float] = (0.0, 0.0, 0.0), direction: np.ndarray | None = None) -> Path:
    """Write ``array`` (index order (x, y, z)) as ``path`` (.mhd, with a .raw beside it) or a single .mha file.

    ``origin`` and ``direction`` (3x3, columns = axis directions) are in ITK's LPS world coordinates.
    """
    path = Path(path)
    array = np.asarray(array)
    types = {np.dtype(v): k for k, v in _ELEMENT_TYPES.items()}
    if array.dtype not in types:
        raise ValueError(f"write_metaimage: unsupported dtype {array.dtype}")
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    payload = np.ascontiguousarray(array.transpose(tuple(range(array.ndim))[::-1])).astype(
        array.dtype.newbyteorder("<")).tobytes()
    single = path.suffix.lower() == ".mha"
    lines = [
        "ObjectType = Image",
        f"NDims = {array.ndim}",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        # repr: the shortest text that reads back as the same double, so a written grid is the grid given
        "TransformMatrix = " + " ".join(repr(float(v)) for v in direction.T.ravel()),
        "Offset = " + " ".join(repr(float(v)) for v in origin),
        "ElementSpacing = " + " ".join(repr(float(v)) for v in spacing),
        "DimSize = " + " ".join(str(s) for s in array.shape),
        f"ElementType = {types[array.dtype]}",
        f"ElementDataFile = {'LOCAL' if single else path.with_suffix('.raw').name}",
    ]
    header = ("\n".join(lines) + "\n").encode("latin-1")
    path.parent.mkdir(parents=True, exist_ok=True)
    if single:
        path.write_bytes(header + payload)
    else:
        path.with_suffix(".raw").write_bytes(payload)
        path.write_bytes(header)
    return path
