"""``maskwatch train-classifier``: train, evaluate and export the mask classifier; prints the report as JSON.

The recipe options default to the shipped recipe (:class:`maskwatch.training.recipe.Recipe`, written down in
``maskwatch/assets/train_config.yaml``); ``--config FILE`` sets options from a YAML file, and flags given override it.

Run: ``maskwatch train-classifier --config maskwatch/assets/train_config.yaml --data-root ../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from maskwatch.training.recipe import ARCHS, RECIPE_KEYS, Recipe, read_config

SHIPPED = Recipe()
RUN_KEYS = ("data_root", "out", "report", "threads", "cv_folds")
PATH_KEYS = ("data_root", "out", "report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maskwatch train-classifier", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, help="shared data folder (detection/, faces/); required")
    p.add_argument("--out", type=Path, help="ONNX model to write; required")
    p.add_argument("--report", type=Path, help="also write the JSON report here")
    p.add_argument("--threads", type=int, help="torch / onnxruntime CPU threads (default 2)")
    p.add_argument(
        "--cv-folds",
        type=int,
        help="cross-validate: train K models, each holding out one fold of the val-sets images, write "
        "OUT.foldI.onnx (and REPORT.foldI.json), and report the metrics pooled over every held-out face",
    )
    p.add_argument("--config", type=Path, help="YAML file of these options (keys as the option names with _ for -)")
    r = p.add_argument_group("recipe (defaults: the shipped recipe)")
    r.add_argument("--arch", choices=ARCHS, help=f"default {SHIPPED.arch}; another arch brings its own input size "
                   "and optimiser settings")
    r.add_argument("--epochs", type=int, help=f"default {SHIPPED.epochs}")
    r.add_argument("--input-px", type=int, help=f"crop side (default {SHIPPED.input_px}; ofm 64)")
    r.add_argument("--crop-margin", type=float, help=f"crop side over face side (default {SHIPPED.crop_margin:g})")
    r.add_argument("--seed", type=int, help=f"default {SHIPPED.seed}")
    r.add_argument(
        "--in-domain-share",
        type=float,
        help="share of each label's draws from the val-sets' training images (0 = in proportion to the counts; "
        f"default {SHIPPED.in_domain_share:g})",
    )
    r.add_argument(
        "--val-sets",
        help="comma-separated detection sets split by source image into training and held-out images, each on "
        f"its own (default {','.join(SHIPPED.val_sets)})",
    )
    r.add_argument("--no-wider", dest="use_wider", action="store_const", const=False,
                   help="leave wider_crowds out of training")
    r.add_argument("--lr", type=float, help=f"AdamW learning rate (default {SHIPPED.lr:g})")
    r.add_argument("--batch", type=int, help=f"batch size (default {SHIPPED.batch})")
    r.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default {SHIPPED.weight_decay:g})")
    r.add_argument("--epoch-samples", type=int, help=f"crops drawn per epoch (default {SHIPPED.epoch_samples})")
    return p


def parse(argv: list[str] | None) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and the run options (``data_root``, ``out``, ``report``, ``threads``, ``cv_folds``) of a command
    line; exits with status 2 and a message on a bad one."""
    p = _parser()
    a = p.parse_args(argv)
    cfg: dict[str, Any] = {}
    if a.config is not None:
        try:
            cfg = read_config(a.config)
        except (OSError, ValueError) as exc:
            p.error(str(exc))
        unknown = sorted(set(cfg) - RECIPE_KEYS - set(RUN_KEYS))
        if unknown:
            p.error(f"{a.config}: unknown key(s) {unknown}; expected some of {sorted(RECIPE_KEYS | set(RUN_KEYS))}")
    given = {**cfg, **{k: v for k, v in vars(a).items() if v is not None and k != "config"}}
    run = {k: given.get(k) for k in RUN_KEYS}
    run.update({k: Path(run[k]) for k in PATH_KEYS if run[k] is not None})
    missing = [f"--{k.replace('_', '-')}" for k in ("data_root", "out") if run[k] is None]
    if missing:
        p.error(f"{' and '.join(missing)} required (on the command line or in --config)")
    try:
        recipe = Recipe.from_settings({k: v for k, v in given.items() if k in RECIPE_KEYS})
    except ValueError as exc:
        p.error(str(exc))
    return recipe, run


def main(argv: list[str] | None = None) -> int:
    """Command line: train, evaluate, export; prints the report as JSON on stdout."""
    recipe, run = parse(argv)
    from maskwatch.training.loop import cross_validate, train_classifier

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    threads = int(run["threads"] or 2)
    if run["cv_folds"]:
        report = cross_validate(run["data_root"], run["out"], int(run["cv_folds"]), run["report"], log, recipe, threads)
    else:
        report = train_classifier(run["data_root"], run["out"], recipe, threads=threads, log=log)
    text = json.dumps(report, indent=2)
    if run["report"]:
        run["report"].parent.mkdir(parents=True, exist_ok=True)
        run["report"].write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
