"""`genesis-jax predict`: segment unlabelled scans with fine-tuned weights (genesis_jax.evaluation.predict).

    genesis-jax predict -i DIR/imagesTs -o OUT --weights=W2/weights [--save-probabilities] [--mirror]

IN is a volume file (NIfTI, MetaImage), a DICOM series directory, or a folder of them (searched recursively);
nnU-Net names ``<case>_0000.nii.gz`` (``_0001`` ... more channels) give ``OUT/<case>.nii.gz``. Each output is a
uint8 label map with the input's shape and geometry, in the input's format (a DICOM series gives NIfTI);
``--save-probabilities`` adds ``OUT/<case>_probabilities.nii.gz`` (uint8, value/255 = p). One line per case, a
progress bar over the sliding windows, and the throughput at the end. A file that cannot be read is named and
skipped, the others predicted (exit status 1 if any failed); a rerun skips the cases already written.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment unlabelled scans (NIfTI, MetaImage, DICOM): label maps on each input's grid",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--input", required=True, help="a volume file, a DICOM series directory, or a folder")
    p.add_argument("-o", "--output", required=True, help="output folder (created)")
    p.add_argument("--weights", required=True, help="a fine-tuned segmentation weights directory (or its workdir)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <case>_probabilities.nii.gz: uint8, p = value/255 (NIfTI scl_slope 1/255)")
    p.add_argument("--mirror", action="store_true",
                   help="test-time mirroring: average over flips along every spatial axis (8x the network calls)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: recorded)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per network call (default: recorded)")
    p.add_argument("--overwrite", action="store_true", help="predict again the cases whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _count_text(counts: dict[int, int], names: dict[int, str]) -> str:
    return ", ".join(f"{names.get(i, i)}: {n:,}" for i, n in sorted(counts.items()))


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from genesis_jax.cli._logging import setup_logging
    from genesis_jax.evaluation.predict import Predictor, find_cases, remove_stale_temporaries
    from genesis_jax.workdir import hold, is_disk_full

    setup_logging()
    out_dir = Path(args.output).expanduser()
    cases = find_cases(args.input, exclude=out_dir)  # an output folder inside the input is not input
    if not cases:
        raise ValueError(f"{args.input}: no NIfTI, MetaImage or DICOM series found")
    predictor = Predictor(args.weights, overlap=args.overlap, batch_size=args.batch_size, mirror=args.mirror)
    with hold(out_dir, "predict"):  # one writer per output folder; proves it writable before the first case
        remove_stale_temporaries(out_dir)  # left by a killed run
        print(f"predict: {len(cases)} case(s) from {args.input}; {predictor.describe()}")
        done = [c for c in cases if not args.overwrite and predictor.is_done(c, out_dir, args.save_probabilities)]
        todo = [c for c in cases if c not in done]
        bars: list = []

        def progress(total: int, case):
            bar = tqdm(total=total, unit="window", desc=case.name, leave=False, disable=args.no_progress,
                       mininterval=0.5)
            bars.append(bar)
            return bar.update

        results, failed = [], []
        for case in todo:
            try:
                result = predictor.predict_case(case, out_dir, save_probabilities=args.save_probabilities,
                                                progress=progress)
            except Exception as err:  # named and skipped; the other cases go on
                if is_disk_full(err) or not isinstance(err, (ValueError, OSError)):
                    raise  # a full disk fails every case; anything else is a bug: the error boundary reports it
                message = str(err).splitlines()[0] if str(err) else type(err).__name__
                where = str(case.channels[0])
                print(f"genesis-jax predict: error: {message if where in message else f'{where}: {message}'}; "
                      "skipped", file=sys.stderr)
                failed.append(case)
                continue
            finally:
                while bars:
                    bars.pop().close()
            results.append(result)
            shape = "x".join(map(str, result.shape))
            spacing = "x".join(f"{s:.3g}" for s in result.spacing)
            print(f"{case.name}: {shape} voxels at {spacing} mm, {result.windows} windows -> {result.written[-1]} "
                  f"({_count_text(result.counts, predictor.label_names)} voxels) in {result.seconds:.1f} s")
    voxels = sum(r.voxels for r in results)
    seconds = sum(r.seconds for r in results)
    rate = f"; {voxels:,} voxels in {seconds:.1f} s: {voxels / seconds:,.0f} voxels/s, " \
           f"{seconds / len(results):.1f} s per case (the first includes compilation)" if results else ""
    print(f"predict: {len(results)} written, {len(done)} already done (--overwrite to redo), {len(failed)} failed"
          f"{rate}; {out_dir}")
    return 1 if failed else 0
