"""The restoration rates: an ml_collections config with the published defaults, and its frozen, hashable form.

``default_config()`` is what configs embed and users override (``--config.transforms.local_rate=1.0``); the jitted
functions take ``RestorationSettings``, a frozen dataclass, as a static argument, so equal settings never trigger a
recompile. ``settings_from_config`` validates a config and names the offending field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from genesis_jax.transforms.flip import FLIP_MODES
from genesis_jax.transforms.shuffle import NUM_WINDOWS


@dataclasses.dataclass(frozen=True)
class RestorationSettings:
    """Static settings of the restoration transform (published defaults; see ``default_config`` for meanings)."""

    flip_rate: float = 0.4
    flip_mode: str = "all"
    local_rate: float = 0.5
    local_windows: int = NUM_WINDOWS
    nonlinear_rate: float = 0.9
    paint_rate: float = 0.9
    outpaint_share: float = 0.8
    spatial_dims: int = 0


_RATES = ("flip_rate", "local_rate", "nonlinear_rate", "paint_rate", "outpaint_share")


def default_config() -> ml_collections.ConfigDict:
    """The published deformation rates (ModelsGenesis pytorch/config.py), plus the two documented choices.

    - flip_rate 0.4: continue probability of the (at most 3) flip draws.
    - flip_mode 'all': flips pick any spatial axis; 'published' reproduces the published draw (never the depth axis,
      a third of the draws wasted on the channel axis).
    - local_rate 0.5, local_windows 10000: probability of local pixel shuffling and its number of windows (the
      MedIA paper says 1,000; the published code uses 10,000).
    - nonlinear_rate 0.9: probability of the Bezier intensity map (half of the maps decreasing).
    - paint_rate 0.9, outpaint_share 0.8: probability of painting, and the share of it that is out-painting.
    - spatial_dims 0: infer from the cube's rank ((X, Y) 2D, (X, Y, Z) 3D, (X, Y, Z, C) 3D with channels);
      2 or 3 to say it (needed for 2D with channels, (X, Y, C)).
    """
    defaults = RestorationSettings()
    return ml_collections.ConfigDict({f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)})


def settings_from_config(config: Any = None) -> RestorationSettings:
    """Validate a config (ConfigDict, mapping, RestorationSettings or None = defaults) into RestorationSettings.

    Fields missing from the config take their published default. Raises ValueError naming a bad or unknown field.
    """
    if config is None:
        return RestorationSettings()
    if isinstance(config, RestorationSettings):
        values = dataclasses.asdict(config)
    elif isinstance(config, ml_collections.ConfigDict):
        values = config.to_dict()
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise TypeError(f"transforms config must be a ConfigDict, a mapping or None, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(RestorationSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"transforms config: unknown field(s) {unknown}; known fields are {sorted(known)}")
    for name in _RATES:
        if name in values:
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"transforms config: {name} must be a number in [0, 1], got {value!r}")
            values[name] = float(value)
    if values.get("flip_mode", "all") not in FLIP_MODES:
        raise ValueError(f"transforms config: flip_mode must be one of {FLIP_MODES}, got {values['flip_mode']!r}")
    windows = values.get("local_windows", NUM_WINDOWS)
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 0:
        raise ValueError(f"transforms config: local_windows must be an integer >= 0, got {windows!r}")
    if values.get("spatial_dims", 0) not in (0, 2, 3):
        raise ValueError(f"transforms config: spatial_dims must be 0 (infer), 2 or 3, got {values['spatial_dims']!r}")
    return RestorationSettings(**values)
