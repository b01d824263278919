"""The own-data commands as a user types them, on a tiny nnU-Net v2 raw dataset with two labels (liver, spleen):
`data prepare --dataset=DIR`, `pretrain --config=pretrain/dataset:tiny --dataset=DIR`, `finetune` on one label
(binary, from the pre-trained weights) and on every label (softmax), `predict` on imagesTs with both networks,
`convert` to .pt and `evaluate`, with no other override."""

import json

import numpy as np
import pytest

from genesis_jax.cli import main
from tests.data.dataset_folder import write_nnunet_dataset


@pytest.mark.slow
def test_prepare_pretrain_and_finetune_a_dataset_folder_with_no_override(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENESIS_JAX_CACHE", str(tmp_path / "cache"))
    folder = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    w1, w2, w3 = (tmp_path / w for w in ("W1", "W2", "W3"))

    assert main(["data", "prepare", f"--dataset={folder}"]) == 0
    out = capsys.readouterr().out
    assert "labels: background=0, liver=1, spleen=2" in out and "unlabelled: 1 scan(s): case_004" in out, out
    split = json.loads((tmp_path / "cache/tensorflow_datasets/datasets/Dataset001_Tiny/splits.json").read_text())
    assert sorted(split["train"] + split["validation"]) == [f"case_{i:03d}" for i in range(4)] and split["validation"]

    assert main(["pretrain", "--config=pretrain/dataset:tiny", f"--dataset={folder}", f"--workdir={w1}"]) == 0
    assert (w1 / "weights" / "metadata.json").is_file()

    assert main(["finetune", "--config=finetune/dataset:tiny", f"--dataset={folder}", "--label=liver",
                 f"--init={w1 / 'weights'}", f"--workdir={w2}"]) == 0
    binary = json.loads((w2 / "weights" / "metadata.json").read_text())
    assert binary["labels"] == {"background": 0, "liver": 1} and binary["head"] == "sigmoid"
    assert binary["inference"]["modality"] == "ct" and binary["inference"]["window"] == [16, 16, 8]
    assert json.loads((w2 / "weights" / "model_config.json").read_text())["num_classes"] == 1
    transfer = json.loads((w2 / "transfer_report.json").read_text())
    assert any(p.startswith("params/encoder") for p in transfer["loaded"])

    assert main(["finetune", "--config=finetune/dataset:tiny", f"--dataset={folder}", f"--workdir={w3}"]) == 0
    every = json.loads((w3 / "weights" / "metadata.json").read_text())
    assert every["labels"] == {"background": 0, "liver": 1, "spleen": 2} and every["head"] == "softmax"
    model = json.loads((w3 / "weights" / "model_config.json").read_text())
    assert model["num_classes"] == 3 and model["head_activation"] == "softmax"
    test = json.loads((w3 / "summary.json").read_text())["test"]
    assert {"dice", "dice_liver", "dice_spleen"} <= set(test["set"]) and len(test["per_volume"]) == len(
        split["validation"])
    finished = [line for line in capsys.readouterr().out.splitlines() if line.startswith("finetune completed")]
    assert finished and " test " in finished[-1] and "dice_liver" in finished[-1] and "{" not in finished[-1]

    # predict on the unlabelled imagesTs: uint8 label maps on the input's grid, the classes of each network
    import nibabel as nib

    source = nib.load(str(folder / "imagesTs" / "case_004_0000.nii.gz"))
    for weights, classes in ((w2, {0, 1}), (w3, {0, 1, 2})):
        out = tmp_path / f"OUT_{weights.name}"
        assert main(["predict", "-i", str(folder / "imagesTs"), "-o", str(out), f"--weights={weights / 'weights'}",
                     "--no-progress"]) == 0
        predicted = nib.load(str(out / "case_004.nii.gz"))
        assert predicted.shape == source.shape and np.allclose(predicted.affine, source.affine)
        values = np.asanyarray(predicted.dataobj)
        assert values.dtype == np.uint8 and set(np.unique(values).tolist()) <= classes
    assert main(["convert", f"--from={w2 / 'weights'}", f"--to={tmp_path / 'W2.pt'}"]) == 0
    assert (tmp_path / "W2.pt").stat().st_size > 0

    # evaluate reads the same record; the labels come from the weights (no --label)
    assert main(["evaluate", "--config=finetune/dataset:tiny", f"--dataset={folder}", f"--weights={w3}",
                 f"--out={tmp_path / 'E3'}"]) == 0
    metrics = json.loads((tmp_path / "E3" / "metrics.json").read_text())["metrics"]
    assert metrics["set"]["dice_spleen"] == pytest.approx(test["set"]["dice_spleen"], abs=1e-6)
