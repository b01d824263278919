"""Training: the entry functions ``pretrain`` (``pretrain``) and ``finetune`` (``finetune``, with its task pieces
in ``finetune_steps``) and what they run on: train state (``state``), jitted steps (``steps``), losses (``losses``:
one ``loss(y_true, y_pred)`` convention, one deep-supervision sum), optimisers and LR schedules (``schedules``),
mesh and sharding (``mesh``, ``distributed``), training checkpoints (``checkpointing``; the weights directory is
:mod:`genesis_jax.models.weights`), metrics logs, progress and previews (``metrics_log``), precise BatchNorm
statistics (``precise_bn``), the transfer rule from pre-trained weights (``transfer``, also used by active
learning) and the training configs' checks (``config_checks``)."""
