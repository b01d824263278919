"""Self-supervised pretext tasks for pre-training, as plug-ins: how a batch of clean cubes becomes network inputs
and targets on the device, the loss, the preview, the config check and the quality gate's figures.

Modules: ``base`` (the protocol, :class:`Pretext`), ``registry`` (the names), one module per pretext (``genesis``:
Models Genesis restoration; ``mim``: masked image modelling; ``genesis_mim``: both), ``masks`` (block masks on the
device) and ``gate`` (the restoration quality gate). ``genesis_jax.train.pretrain`` runs whichever
``config.pretext.name`` picks and knows none by name.
"""

from genesis_jax.pretext.base import GateSettings, Pretext
from genesis_jax.pretext.registry import PRETEXTS, build_pretext, pretext_name

__all__ = ["GateSettings", "PRETEXTS", "Pretext", "build_pretext", "pretext_name"]
