"""`genesis-jax al`: the human-in-the-loop active, continual fine-tuning loop (select -> label -> step).

  genesis-jax al select --config=active/acft:tiny --workdir=DIR --budget=8
  genesis-jax al label  --workdir=DIR --file=DIR/selections/round_0000.csv
  genesis-jax al step   --config=active/acft:tiny --workdir=DIR
  genesis-jax al status --workdir=DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "al",
        help="active, continual fine-tuning with a human in the loop (select / label / step / status)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="al_command", metavar="ACTION")
    p.set_defaults(func=lambda args, rest: (p.print_help(), 2)[1])

    def common(q: argparse.ArgumentParser, needs_config: bool) -> None:
        q.add_argument("--config", required=needs_config, default=None,
                       help="active-learning config, path.py[:variant]; --config.x=y overrides follow")
        q.add_argument("--workdir", default=None, help="the loop's directory (default: config.workdir)")
        q.add_argument("--dataset", default=None, metavar="DIR",
                       help="pool: candidates from a dataset folder prepared by `genesis-jax data prepare "
                       "--dataset=DIR` (with --label); later rounds reuse the work directory's pool settings")
        q.add_argument("--label", default=None, metavar="NAME", help="with --dataset: the positive label's name")

    s = sub.add_parser("select", help="write the candidates to annotate next (CSV, JSON, PNG thumbnails)")
    common(s, True)
    s.add_argument("--budget", type=int, required=True, help="number of candidates b to annotate this round")
    s.add_argument("--method", choices=("randomized", "top", "random"), default=None,
                   help="selection (default: config.selection.method)")
    s.set_defaults(func=run_select, accepts_config_overrides=True)

    lab = sub.add_parser("label", help="import annotations (CSV with id,label columns or JSON); idempotent")
    common(lab, False)
    lab.add_argument("--file", required=True, help="annotation file: the selection CSV with 'label' filled in, or JSON")
    lab.add_argument("--overwrite", action="store_true", help="replace the labels of already labelled ids")
    lab.set_defaults(func=run_label, accepts_config_overrides=True)

    stp = sub.add_parser("step", help="fine-tune on this round's annotations, then score the remaining pool")
    common(stp, True)
    stp.set_defaults(func=run_step, accepts_config_overrides=True)

    stat = sub.add_parser("status", help="round, labels per class, history")
    common(stat, False)
    stat.set_defaults(func=run_status, accepts_config_overrides=True)


def _config_and_workdir(args: argparse.Namespace, overrides: list[str]):
    from genesis_jax.config_loader import load_config

    config = load_config(args.config, overrides) if args.config else None
    if config is None and (overrides or args.dataset is not None or args.label is not None):
        raise SystemExit(f"genesis-jax al {args.al_command}: --config.x=y overrides, --dataset and --label need "
                         "--config")
    workdir = args.workdir or (config.workdir if config is not None else None)
    if not workdir:
        raise SystemExit(f"genesis-jax al {args.al_command}: give --workdir (or a --config with a workdir field)")
    if config is not None:
        from genesis_jax.active.session import with_stored_pool

        if args.dataset is not None:
            with config.unlocked():
                config.pool.kind, config.pool.path, config.pool.label = "dataset", args.dataset, args.label or ""
            overrides = [*overrides, "--config.pool.kind=dataset"]  # the flags are the pool settings now
        elif args.label is not None:
            raise SystemExit(f"genesis-jax al {args.al_command}: --label needs --dataset=DIR")
        config = with_stored_pool(config, workdir, overrides)
    return config, workdir


def _warn_about_init(config) -> None:
    """The one line for ``config.init`` weights that failed the pre-training quality gate or record none."""
    from genesis_jax.pretext.gate import weights_warning

    init = config.get("init")
    if isinstance(init, str) and init and (warning := weights_warning(init)):  # another kind of config: al says so
        print(warning, file=sys.stderr)


def _fail(args: argparse.Namespace, err: Exception) -> int:
    print(f"genesis-jax al {args.al_command}: {err}", file=sys.stderr)
    return 1


def run_select(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.active import session
    from genesis_jax.active.state import StateError

    config, workdir = _config_and_workdir(args, overrides)
    _warn_about_init(config)
    try:
        paths = session.select(config, workdir, args.budget, args.method)
    except (StateError, ValueError, FileNotFoundError) as err:
        return _fail(args, err)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"fill in the 'label' column of {paths['csv']}, then: genesis-jax al label --workdir={workdir} "
          f"--file={paths['csv']}")
    return 0


def run_label(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.active.state import StateError, import_annotations

    _, workdir = _config_and_workdir(args, overrides)
    try:
        summary = import_annotations(workdir, args.file, overwrite=args.overwrite,
                                     on_wait=lambda message: print(f"genesis-jax al label: {message}",
                                                                   file=sys.stderr, flush=True))
    except StateError as err:
        return _fail(args, err)
    print(f"round {summary.round}: {summary.added} added, {summary.changed} changed, "
          f"{summary.unchanged} already present")
    return 0


def run_step(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.active import session
    from genesis_jax.active.state import StateError

    config, workdir = _config_and_workdir(args, overrides)
    _warn_about_init(config)
    try:
        s = session.step(config, workdir)
    except (StateError, ValueError, FileNotFoundError) as err:
        return _fail(args, err)
    if s.already_done:
        print(f"round {s.round}: already trained ({s.model}, {s.n_trained} candidates, mean loss {s.loss:.4f}) by an "
              f"earlier `al step`; {s.n_unlabelled} candidates scored; next: genesis-jax al select")
        return 0
    print(f"round {s.round}: trained {s.model} on {s.n_trained} candidates ({s.n_new} new, "
          f"{s.n_misclassified} misclassified earlier ones"
          + (f", {s.n_mixed} earlier ones of a class H u Q lacked" if s.n_mixed else "") + f"), mean loss {s.loss:.4f}; "
          f"{s.n_unlabelled} candidates left unlabelled and scored")
    return 0


def run_status(args: argparse.Namespace, overrides: list[str]) -> int:
    from genesis_jax.active import session
    from genesis_jax.active.state import StateError

    _, workdir = _config_and_workdir(args, overrides)
    try:
        info = session.status(workdir)
        per_class = ", ".join(f"{name} {n}" for name, n in info["labelled_per_class"].items())
        last = info["history"][-1] if info["history"] else None
        trained = (f"; last step trained {last['model']} on {last['n_trained']} candidates, mean loss "
                   f"{last['loss']:.4f}" if last else "; no step yet")
        print(f"round {info['round']}: {info['labelled']} of {info['pool']} candidates labelled"
              + (f" ({per_class})" if per_class else "") + f", {info['new_this_round']} new this round{trained}; "
              f"model {info['model']}; state in {Path(workdir) / 'state.json'}")
    except StateError as err:
        return _fail(args, err)
    return 0
