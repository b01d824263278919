"""Epoch-level callbacks of the published fine-tuning recipe, with Keras semantics, as plain host-side state.

* :class:`ReduceOnPlateau`: ``ReduceLROnPlateau(monitor='val_loss', factor=0.5, patience=6, min_delta=1e-4,
  min_lr=1e-6)``: an epoch improves when ``value < best - min_delta``; after ``patience`` epochs without improvement
  the learning rate is multiplied by ``factor`` (not below ``min_lr``) and the wait restarts.
* :class:`EarlyStopping`: ``EarlyStopping(monitor='val_loss', patience=p)``: stop after ``patience`` epochs without
  ``value < best - min_delta``.
Both are dataclasses of plain numbers, so they are saved with a checkpoint and restored on resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class ReduceOnPlateau:
    factor: float = 0.5
    patience: int = 6
    min_delta: float = 1e-4
    min_lr: float = 1e-6
    best: float = math.inf
    wait: int = 0

    def update(self, value: float, learning_rate: float) -> float:
        """The learning rate to use from the next epoch on."""
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return learning_rate
        self.wait += 1
        if self.wait >= self.patience and learning_rate > self.min_lr:
            self.wait = 0
            return max(learning_rate * self.factor, self.min_lr)
        return learning_rate

    def state_dict(self) -> dict:
        return asdict(self)


@dataclass
class EarlyStopping:
    patience: int = 50
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    wait: int = 0

    def update(self, value: float, epoch: int) -> tuple[bool, bool]:
        """(improved, stop)."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True, False
        self.wait += 1
        return False, self.wait >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)
