"""A target task of this package fine-tuned with nnU-Net's ResEnc network instead of the Genesis U-Net: the task's
recipe (data, loss, optimiser, sampling, evaluation) with ``config.model`` from models/resenc (the ResEnc-L network of
nnssl and pretrain/resenc_genesis; ``:tiny`` models/resenc:tiny), sigmoid head.

Run (weights from pretrain/resenc_genesis, or an nnU-Net / nnssl checkpoint imported with `genesis-jax convert`):
  genesis-jax convert --from=checkpoint_final.pth --to=weights/from_nnssl
  genesis-jax finetune --config=finetune/resenc:lcs --workdir=runs/lcs_resenc --init=weights/from_nnssl
  genesis-jax finetune --config=finetune/resenc:lcs,tiny --workdir=/tmp/lcs_resenc --init=scratch   # CPU smoke run
Expected: as the task's own config (its docstring), with the ResEnc network; the transfer report lists the encoder,
stem and decoder loaded and the head new. The task's input shape must divide by the network's 32 (64x64x32 does;
``:tiny`` by 4).
"""

import importlib

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.models import resenc


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, task=("lcs", "ncs"), tiny=False)
    task = importlib.import_module(f"genesis_jax.configs.finetune.{opts.task}")
    config = task.get_config("tiny" if opts.tiny else None)
    config.model = resenc.get_config("tiny" if opts.tiny else "nnssl").model
    config.model.head_activation = "sigmoid"
    return config
