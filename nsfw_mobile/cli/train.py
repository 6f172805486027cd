"""``nsfw-mobile train``: a classifier of the user's own data."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from .common import (
    ExistingPath,
    contract_changes,
    contract_options,
    echo_json,
    given,
    json_option,
    out_dir_option,
)


def _augmentations(text: str) -> tuple[str, ...]:
    if text.strip() == "none":
        return ()
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _config(data_dir: Path, out_dir: Path, options: dict):
    """A TrainConfig from the command's options (their names follow its fields)."""
    from ..train import TrainConfig

    provenance = contract_changes(
        *(options.pop(k) for k in ("name", "model_version", "author", "license_", "description"))
    )
    nsfw = options.pop("nsfw_labels")
    nsfw_labels = None if nsfw is None else tuple(n.strip() for n in nsfw.split(",") if n.strip())
    return TrainConfig(
        data_dir=str(data_dir),
        out=str(out_dir),
        class_weights=not options.pop("no_class_weights"),
        augment=_augmentations(options.pop("augment")),
        nsfw_labels=nsfw_labels,
        **{key: value for key, value in provenance.items() if value is not None},
        **options,
    )


@click.command(short_help="Train a classifier on folders of images, one per class.")
@click.argument("data_dir", type=ExistingPath(file_okay=False))
@out_dir_option(
    "Run folder: best.keras, last.keras, metrics.csv, curves.png, tensorboard/.", required=True
)
@click.option(
    "--backbone",
    default="imagenet",
    show_default=True,
    help="Backbone start, in train's own words: imagenet (downloaded by Keras), nsfw (the "
    "pretrained model's MobileNetV2 1.0), mid (nsfwjs-mobilenet-v2-mid's MobileNetV2 1.4, "
    "fetched on first use), none (random weights: the whole network trains from the first "
    "epoch, BatchNorm included, and --fine-tune does not apply); another zoo model's name, "
    "resolved as every command's --model (a MobileNetV2 one); or a weights file (a path: "
    "./mid is a file).",
)
@click.option(
    "--alpha",
    type=float,
    default=None,
    help="MobileNetV2 width (default: the backbone's, 1.4 for mid, else 1.0).",
)
@click.option(
    "--input-size",
    type=int,
    default=224,
    show_default=True,
    help="Side of the square input images, in pixels (a multiple of 32).",
)
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Epochs of phase 1 (head only, backbone frozen).",
)
@click.option(
    "--fine-tune",
    "fine_tune_layers",
    type=click.IntRange(0),
    default=0,
    help="Phase 2: unfreeze the top N backbone layers (BatchNorm stays frozen).",
)
@click.option("--fine-tune-epochs", type=click.IntRange(0), default=0, help="Epochs of phase 2.")
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Images per training step.",
)
@click.option(
    "--lr",
    "learning_rate",
    type=float,
    default=1e-3,
    show_default=True,
    help="Learning rate of phase 1 (phase 2 uses a tenth).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adam"]),
    default="sgd",
    show_default=True,
    help="SGD with momentum 0.9 (the seed's) or Adam.",
)
@click.option(
    "--val-split",
    type=float,
    default=None,
    help="Validation fraction when DATA_DIR has no test/ folder (default 0.2).",
)
@click.option(
    "--no-class-weights", is_flag=True, help="Do not weight classes by inverse frequency."
)
@click.option(
    "--augment",
    default="rotation,shift,shear,zoom,channel_shift,flip",
    show_default=True,
    help="Comma-separated augmentations, or 'none'.",
)
@click.option(
    "--early-stopping",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation accuracy.",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(1),
    default=None,
    help="Batches per epoch (the seed used 10); default: the whole training set.",
)
@click.option(
    "--merge",
    default="",
    help="Fold folders into classes, e.g. drawings=neutral,hentai=porn (the scraper's five "
    "folders into three).",
)
@click.option(
    "--nsfw-labels",
    default=None,
    help="Comma-separated classes whose probabilities add up to the nsfw_score "
    "(default: those named porn, sexy, hentai, nsfw, unsafe, explicit, nude).",
)
@contract_options
@click.option("--seed", type=int, default=0, show_default=True, help="Makes CPU runs repeatable.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --out with its saved settings (other training "
    "options are refused).",
)
@json_option("Print a JSON summary at the end.")
@click.pass_context
def train(ctx, data_dir, out_dir, resume, as_json, **options):
    """Train the seed architecture (MobileNetV2 + small head) on DATA_DIR.

    DATA_DIR holds one folder per class, either directly or under train/ with a
    test/ (or val/) folder beside it; the classes are the folders' names
    (--merge folds folders together). Corrupt files and files found in both
    splits are listed before training starts. best.keras carries the model's
    contract (labels, NSFW labels, provenance), so convert needs no flags to make
    every target of the registry from it ({targets}).

    \b
    Examples:
      nsfw-mobile train data/ --out runs/first --backbone nsfw --epochs 20
      nsfw-mobile train scraped/ --out runs/3 --merge drawings=neutral,hentai=porn
      nsfw-mobile train data/ --out runs/first --resume
    """
    from dataclasses import asdict

    from ..train import train as run_training

    if resume:
        flags = {param.name: param.opts[0] for param in ctx.command.params}
        settings = [flags[name] for name in options if given(ctx, name)]
        if settings:
            raise UsageError(
                f"--resume continues the run with the settings it was started with: drop "
                f"{', '.join(settings)} (or start a new run in another --out)"
            )
    elif options["fine_tune_epochs"] and not options["fine_tune_layers"]:
        raise UsageError(
            "--fine-tune-epochs: phase 2 trains the backbone layers --fine-tune N unfreezes; "
            "give --fine-tune N, or drop --fine-tune-epochs"
        )
    config = _config(data_dir, out_dir, options)
    if not resume:
        config.check()
        backbone = config.backbone_model(log=lambda line: click.echo(line, err=True))
        if backbone is not None:
            backbone.fetch()
    result = run_training(config, resume=resume, log=lambda line: click.echo(line, err=True))
    if as_json:
        echo_json(
            {**asdict(result), "run_dir": str(result.run_dir), "best_model": str(result.best_model)}
        )
        return
    click.echo(
        f"best validation accuracy {result.best_val_accuracy:.2%} after "
        f"{result.epochs_run} epochs; model: {result.best_model}"
    )


COMMANDS = (train,)
