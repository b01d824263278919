"""The packaged experiment configs (ml_collections), one module per recipe, as big_vision keeps them.

Each module under ``models/``, ``data/``, ``pretrain/``, ``finetune/`` and ``active/`` defines ``get_config(arg)``;
its docstring gives the command that runs it. ``--config=pretrain/genesis_chest_ct:tiny`` names one
(see :mod:`genesis_jax.config_loader`); configs compose by ordinary imports (``from genesis_jax.configs.data
import genesis_cubes``), and :func:`genesis_jax.configs.variants.parse_arg` parses the ``:variant`` argument.
"""
