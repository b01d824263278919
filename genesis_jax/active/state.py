"""The human-in-the-loop state on disk: the labelled set, the round, the current model; written crash-safely.

Layout of a work directory::

    state.json            round t, labels {id: class}, the round each label was imported in, the current model,
                          the history of rounds. The only file that says what has happened (the commit point).
    pool_ids.json         the candidate ids of the pool (annotations for other ids are rejected)
    config.json           the config the loop was started with (provenance)
    models/round_NNNN/    the weights of model M_t (genesis_jax weights directory)
    selections/round_NNNN.{csv,json,png}   candidates proposed for annotation at round t
    scores/round_NNNN.npz scores of the pool under M_t

Every file is written to a temporary name in the same directory and moved into place with ``os.replace`` (atomic
on POSIX), and a model directory is complete before ``state.json`` points to it, so a crash at any point leaves
either the old or the new state, never a mixture: no annotation is lost or counted twice. Labels imported at
round t (the set Q) are those with ``label_round == t``; ``step`` trains on them and moves to round t+1.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genesis_jax.workdir import hold, write_file_atomically

STATE_FILE = "state.json"
POOL_IDS_FILE = "pool_ids.json"
CONFIG_FILE = "config.json"
STATE_VERSION = 1


class StateError(ValueError):
    """A work directory or an annotation file that cannot be used; the message names the file and the problem."""


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    return write_file_atomically(path, data)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


@dataclasses.dataclass
class LoopState:
    round: int = 0
    model: str = ""  # path of M_round relative to the work directory
    initial_model: str = ""
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    label_round: dict[str, int] = dataclasses.field(default_factory=dict)
    class_names: list[str] = dataclasses.field(default_factory=lambda: ["negative", "positive"])
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    version: int = STATE_VERSION

    def new_ids(self) -> list[str]:
        """Q: labelled at the current round, not trained on yet."""
        return sorted(i for i, r in self.label_round.items() if r == self.round)

    def old_ids(self) -> list[str]:
        """L: labelled in earlier rounds (already trained on)."""
        return sorted(i for i, r in self.label_round.items() if r < self.round)


def model_dir_name(round_: int) -> str:
    return f"models/round_{round_:04d}"


def load_state(workdir: str | Path) -> LoopState:
    path = Path(workdir) / STATE_FILE
    if not path.is_file():
        raise StateError(f"{path}: no active-learning state here (run `genesis-jax al select --config=...` first)")
    try:
        raw = json.loads(path.read_text())
        state = LoopState(**raw)
    except (json.JSONDecodeError, TypeError) as err:
        raise StateError(f"{path}: not a valid state file: {err}") from None
    if state.version != STATE_VERSION:
        raise StateError(f"{path}: state version {state.version}, this genesis_jax reads {STATE_VERSION}")
    state.labels = {str(k): int(v) for k, v in state.labels.items()}
    state.label_round = {str(k): int(v) for k, v in state.label_round.items()}
    return state


def save_state(workdir: str | Path, state: LoopState) -> Path:
    return atomic_write_json(Path(workdir) / STATE_FILE, dataclasses.asdict(state))


def has_state(workdir: str | Path) -> bool:
    return (Path(workdir) / STATE_FILE).is_file()


def load_pool_ids(workdir: str | Path) -> list[str]:
    path = Path(workdir) / POOL_IDS_FILE
    if not path.is_file():
        raise StateError(f"{path}: missing; the work directory was not initialised by `genesis-jax al`")
    return json.loads(path.read_text())


def parse_annotations(path: str | Path, class_names: list[str]) -> dict[str, int]:
    """Read annotations from CSV (columns ``id`` and ``label``; other columns ignored, rows with an empty label
    skipped) or JSON (``{id: label}`` or ``[{"id": ..., "label": ...}, ...]``). A label is a class index or a
    class name. Errors name the file and the row."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: no such annotation file")
    rows: list[tuple[str, Any, str]] = []
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise StateError(f"{path}: invalid JSON: {err}") from None
        except UnicodeDecodeError as err:
            raise StateError(f"{path}: not UTF-8 text (byte {err.start}); save the annotations as UTF-8") from None
        if isinstance(data, Mapping):
            rows = [(str(k), v, f"key {k!r}") for k, v in data.items()]
        elif isinstance(data, list):
            for n, item in enumerate(data):
                if not isinstance(item, Mapping) or "id" not in item:
                    raise StateError(f"{path}: item {n} must be an object with 'id' and 'label'")
                rows.append((str(item["id"]), item.get("label"), f"item {n}"))
        else:
            raise StateError(f"{path}: expected an object {{id: label}} or a list of {{id, label}} objects")
    else:
        try:  # utf-8-sig: spreadsheet programs often write a byte-order mark
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                if "id" not in fields or "label" not in fields:
                    raise StateError(f"{path}: CSV needs the columns 'id' and 'label' (found {fields})")
                rows = [(str(r["id"]).strip(), r["label"], f"line {n + 2}") for n, r in enumerate(reader)]
        except UnicodeDecodeError as err:
            raise StateError(f"{path}: not UTF-8 text (byte {err.start}); save the annotations as UTF-8") from None
    out: dict[str, int] = {}
    names = {name.lower(): i for i, name in enumerate(class_names)}
    for cid, raw, where in rows:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # not annotated yet
        value = str(raw).strip()
        if value.lower() in names:
            label = names[value.lower()]
        else:
            try:
                label = int(float(value)) if float(value).is_integer() else -1
            except ValueError:
                label = -1
            if not 0 <= label < len(class_names):
                raise StateError(
                    f"{path}, {where}: label {raw!r} for id {cid!r} is neither a class index "
                    f"0..{len(class_names) - 1} nor one of {class_names}"
                )
        if cid in out and out[cid] != label:
            raise StateError(f"{path}, {where}: id {cid!r} is annotated twice with different labels")
        out[cid] = label
    return out


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    added: int
    unchanged: int
    changed: int
    round: int


def import_annotations(
    workdir: str | Path, file: str | Path, overwrite: bool = False, on_wait: Callable[[str], None] | None = None
) -> ImportSummary:
    """Add the annotations of ``file`` to the labelled set (one atomic state write).

    Idempotent: re-importing the same annotations changes nothing. Unknown ids reject the whole file (nothing is
    imported) with a message listing them. A different label for an already labelled id is an error unless
    ``overwrite``; an overwritten label counts as new at the current round. While another command (``al step``)
    holds the work directory's lock this waits for it (``on_wait(message)`` is told once) and then imports into
    the state that command committed, so no label is lost.
    """
    workdir = Path(workdir)
    load_state(workdir)  # a clear error for a directory that is not a work directory, before locking it
    with hold(workdir, "al label", wait=True, on_wait=on_wait):
        return _import_annotations(workdir, file, overwrite)


def _import_annotations(workdir: Path, file: str | Path, overwrite: bool) -> ImportSummary:
    state = load_state(workdir)
    annotations = parse_annotations(file, state.class_names)
    known = set(load_pool_ids(workdir))
    unknown = sorted(set(annotations) - known)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise StateError(
            f"{file}: {len(unknown)} annotation(s) for ids that are not in the pool: {shown}; nothing was imported"
        )
    conflicts = sorted(i for i, y in annotations.items() if i in state.labels and state.labels[i] != y)
    if conflicts and not overwrite:
        shown = ", ".join(f"{i!r} ({state.labels[i]} -> {annotations[i]})" for i in conflicts[:10])
        raise StateError(
            f"{file}: {len(conflicts)} id(s) already have a different label: {shown}; nothing was imported "
            f"(pass --overwrite to correct them)"
        )
    added = unchanged = changed = 0
    for cid, label in annotations.items():
        if cid not in state.labels:
            added += 1
        elif state.labels[cid] == label:
            unchanged += 1
            continue
        else:
            changed += 1
        state.labels[cid] = label
        state.label_round[cid] = state.round
    if added or changed:
        save_state(workdir, state)
    return ImportSummary(added, unchanged, changed, state.round)
