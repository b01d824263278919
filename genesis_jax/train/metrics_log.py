"""Training feedback: a tqdm progress bar (steps/s, loss, ETA), metrics logs (``metrics.csv`` for the per-step
metrics, ``validation.csv`` for the per-epoch ones, everything also in ``metrics.jsonl``), ``progress.png`` (the
loss and validation curves drawn from the two CSVs, redrawn at each validation), TensorBoard event files
(tensorboardX) and restoration preview PNGs (input | prediction | target, one row per sample; drawn by
:mod:`genesis_jax.visualize`).

Only the primary process (process 0) writes; the others get no-op writers. After a resume the logs are cut back
to the restored step, so that a run interrupted by ``kill -9`` has no duplicated or orphaned rows.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from genesis_jax.visualize import save_curves, tile_grid

PROGRESS_PNG = "progress.png"
TRAIN_CSV = "metrics.csv"
VALIDATION_CSV = "validation.csv"
JSONL = "metrics.jsonl"


def _cut_csv(path: Path, max_step: int) -> None:
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys()) if rows else None
    if fields is None:
        return
    kept = [r for r in rows if int(float(r["step"])) <= max_step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)


def _cut_jsonl(path: Path, max_step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= max_step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(workdir: str | Path, name: str = TRAIN_CSV) -> list[dict[str, float]]:
    """The rows of a metrics CSV as floats (for tests, notebooks and the demo)."""
    with (Path(workdir) / name).open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _numeric_rows(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV with their numeric cells as floats (empty or text cells left out); [] when the
    file does not exist yet."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            numbers = {}
            for key, text in row.items():
                try:
                    numbers[key] = float(text)
                except (TypeError, ValueError):
                    continue
            if "step" in numbers:
                rows.append(numbers)
    return rows


class MetricsLog:
    """Append-only CSV/JSONL/TensorBoard writer with fixed CSV columns per file."""

    def __init__(self, workdir: str | Path, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._writers: dict[str, tuple[Any, csv.DictWriter]] = {}
        self._tb = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for name in (TRAIN_CSV, VALIDATION_CSV):
                _cut_csv(self.workdir / name, resume_step)
            _cut_jsonl(self.workdir / JSONL, resume_step)
        else:
            for name in (TRAIN_CSV, VALIDATION_CSV, JSONL):
                (self.workdir / name).unlink(missing_ok=True)
        self._jsonl = (self.workdir / JSONL).open("a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=resume_step)

    def _csv(self, name: str, fields: Sequence[str]) -> csv.DictWriter:
        if name not in self._writers:
            path = self.workdir / name
            exists = path.is_file() and path.stat().st_size > 0
            if exists:
                with path.open(newline="") as f:
                    fields = next(csv.reader(f))
            handle = path.open("a", newline="")
            writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
            if not exists:
                writer.writeheader()
            self._writers[name] = (handle, writer)
        return self._writers[name][1]

    def write(self, step: int, metrics: Mapping[str, Any], *, kind: str = "train") -> None:
        """One row: ``kind`` 'train' goes to metrics.csv, 'validation' to validation.csv, both to the JSONL and
        to TensorBoard (as ``kind/name``)."""
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._csv(TRAIN_CSV if kind == "train" else VALIDATION_CSV, list(row)).writerow(row)
        self._jsonl.write(json.dumps({"kind": kind, **row}) + "\n")
        if self._tb is not None:
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{name}", value, int(step))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_image(tag, image, int(step), dataformats="HW")

    def flush(self) -> None:
        if not self.enabled:
            return
        for handle, _ in self._writers.values():
            handle.flush()
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def plot_progress(self, title: str = "") -> Path | None:
        """Redraw ``progress.png``: the training loss per logged step and the validation metrics per validation
        (``val_loss`` with the training loss, the other ``val_*`` metrics in a panel of their own)."""
        if not self.enabled:
            return None
        self.flush()
        train, val = _numeric_rows(self.workdir / TRAIN_CSV), _numeric_rows(self.workdir / VALIDATION_CSV)

        def curve(rows: list[dict[str, float]], name: str) -> tuple[list[float], list[float]]:
            kept = [r for r in rows if name in r]
            return [r["step"] for r in kept], [r[name] for r in kept]

        loss = {"training loss": curve(train, "loss"), "validation loss": curve(val, "val_loss")}
        panels = {"loss": {k: v for k, v in loss.items() if v[0]}}
        names = sorted({k for r in val for k in r if k.startswith("val_") and k != "val_loss"})
        panels["validation"] = {k[4:]: curve(val, k) for k in names}
        panels = {k: v for k, v in panels.items() if v}
        return save_curves(self.workdir / PROGRESS_PNG, panels, title=title, log_y=("loss",)) if panels else None

    def close(self) -> None:
        if not self.enabled:
            return
        self.flush()
        for handle, _ in self._writers.values():
            handle.close()
        self._writers.clear()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    return value


class Progress:
    """A tqdm bar over training steps (rate = steps/s, ETA) showing the latest loss, and one-line messages (to
    stderr, also without the bar, unless ``messages`` is False: the non-primary processes)."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, messages: bool = True,
                 desc: str = "pretrain"):
        self.messages = messages
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True,
                        smoothing=0.1)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.bar.update(n)
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)

    def write(self, message: str) -> None:
        if self.messages:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _wrapped(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a single long word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _text_strip(lines_per_cell: Sequence[Sequence[str]], cell_width: int, total_width: int, font: Any,
                line_height: int) -> Image.Image:
    """A white strip with each cell's lines centred in its ``cell_width`` columns."""
    height = max(len(lines) for lines in lines_per_cell) * line_height + 4
    strip = Image.new("L", (total_width, height), 255)
    draw = ImageDraw.Draw(strip)
    for column, lines in enumerate(lines_per_cell):
        for row, line in enumerate(lines):
            x = column * cell_width + (cell_width - draw.textlength(line, font=font)) / 2
            draw.text((max(x, 0), 2 + row * line_height), line, fill=0, font=font)
    return strip


def save_preview(path: str | Path, columns: Sequence[np.ndarray], *, titles: Sequence[str] = (),
                 clean_row: Sequence[np.ndarray] | None = None, max_rows: int = 4, scale: int = 4) -> np.ndarray:
    """Write a [0, 1] grey grid as a PNG (nearest-neighbour up-scaled): one row per sample, one column per array of
    ``columns`` (e.g. deformed input | restored | original), each the middle axial slice of the first channel
    (:func:`genesis_jax.visualize.tile_grid`), and with ``clean_row`` a last row of one clean (undeformed) input
    through the network. ``titles`` head the columns; a footer says what the last row is. Returns the grid (the
    panels without text)."""
    samples = range(min(max_rows, len(columns[0])))
    rows = [[a[i][..., 0] for a in columns] for i in samples]
    if clean_row is not None:
        rows.append([a[..., 0] for a in clean_row])
    grid = tile_grid(rows)
    image = Image.fromarray((grid * 255).round().astype(np.uint8), mode="L")
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    if titles or clean_row is not None:
        font = ImageFont.load_default()
        draw = ImageDraw.Draw(image)
        line_height = int(draw.textbbox((0, 0), "Ag", font=font)[3]) + 2
        cell = image.width // len(columns)
        parts = []
        if titles:
            parts.append(_text_strip([_wrapped(draw, t, font, cell - 4) for t in titles], cell, image.width, font,
                                     line_height))
        parts.append(image)
        if clean_row is not None:
            note = "last row: a clean input (no deformation, no mask) through the network"
            parts.append(_text_strip([_wrapped(draw, note, font, image.width - 4)], image.width, image.width, font,
                                     line_height))
        framed = Image.new("L", (image.width, sum(p.height for p in parts)), 255)
        top = 0
        for part in parts:
            framed.paste(part, (0, top))
            top += part.height
        image = framed
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return grid
