"""2D pre-training on the offline sample-CT corpus, for the CPU studies: one config, three pretexts.

Corpus: pretrain/sample_corpus's (train `ct_abdomen`, `ct_chest`, `ct_lung1`; the held-out `ct_lung2` is the
validation the restoration gate reads; `ct_dicom`, the studies' test patient, is never read), resampled to 3 mm,
cut into 64x64x8 cubes of which each step takes one axial 64x64 slice per sample (pretrain/genesis_2d). Network:
the studies' Genesis U-Net (keras variant, 2D, base width 8, depth 3). Optimiser: Adam 1e-3 (not the published SGD
1.0, tuned for 32-wide networks on 623 LUNA16 scans), batch 16, halved on a 5-epoch validation plateau.

Pretexts (options): ``genesis`` (default; Models Genesis restoration, deformed in 2D), ``mim`` (masked image
modelling, 60% of 8-pixel blocks, loss on the masked pixels) and ``genesis_mim`` (the deformations, then the masks).

Run:
  genesis-jax pretrain --config=pretrain/sample_corpus_2d --workdir=runs/sample_corpus_2d
  genesis-jax pretrain --config=pretrain/sample_corpus_2d:mim --workdir=runs/sample_corpus_2d_mim
  python experiments/annotation_efficiency.py     # runs the genesis one itself (cached) and uses it if gated
  :tiny   8 steps of a width-2 network on the same data (a smoke run)
Expected: the held-out gate (restoration MSE <= 0.7 x the batch-mean predictor's on ct_lung2; for genesis and
genesis_mim also clean identity MSE <= 0.005) passes within the step budget the studies give (``max_steps`` 3,000
here; experiments/_protocol.py PRETRAIN_STEPS, for CPU time: genesis 2,500, the masking pretexts 600); whether it did is in summary.json
(``pretext_gate.passed``) and the studies print it first. Measured (genesis, one run on the shared, loaded 2-core
CPU, validation lines as printed): ratio 0.59 and clean identity 0.0061 at step 700 (gate failed on identity),
0.49 and 0.0045 at step 1,700 (passed), about 2.3 steps/s when the machine was least loaded.
"""

import ml_collections

from genesis_jax.configs.common import parse_arg
from genesis_jax.configs.pretrain import genesis_2d, genesis_mim, mim, sample_corpus

SLICE = (64, 64)
CUBE = (*SLICE, 8)
PRETEXTS = ("genesis", "mim", "genesis_mim")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, tiny=False, pretext=PRETEXTS)
    if opts.pretext == "genesis":
        c = genesis_2d.get_config("keras")
    else:
        c = {"mim": mim, "genesis_mim": genesis_mim}[opts.pretext].get_config("keras,2d")
    c.input_shape = (*SLICE, 1)
    c.data = sample_corpus.corpus_data(cube=CUBE, cubes_per_scan=4 if opts.tiny else 256)
    c.global_batch_size = c.per_device_batch_size = 4 if opts.tiny else 16
    c.early_stopping.patience = 10_000  # a fixed budget: the gate, not a plateau, says whether it was enough
    c.max_steps = 3000
    c.checkpoint.every_seconds = 300.0
    c.logging.progress = False
    c = sample_corpus.corpus_training(c, opts.tiny)
    if opts.tiny:
        c.model.base_width = 2
        c.model.depth = 2
    return c
