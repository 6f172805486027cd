"""Transfer learning on the user's data: the seed's recipe, with a resumable run folder.

Run folder:
    best.keras       the best model by validation accuracy (ready for `nsfw-mobile convert`)
    last.keras       the model after the last finished epoch, with its optimizer state
    labels.txt       the classes, in output order
    metrics.csv      one row per epoch (no gaps or duplicates, also after --resume)
    curves.png       training curves
    tensorboard/     TensorBoard logs
    state.json       the run's settings and progress, read by --resume
    corrupt.txt      files that could not be read and were skipped
    cache/           decoded pixels (delete after training to free the space)
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data
from .atomic import atomic_path
from .data import AUGMENTATIONS, check_augmentations
from .errors import UsageError
from .labels import LABELS

BACKBONES = ("imagenet", "nsfw", "none")


@dataclass
class TrainConfig:
    data_dir: str
    out: str
    alpha: float = 1.0
    input_size: int = 224
    backbone: str = "imagenet"
    """imagenet | nsfw | none | path to a weights file"""
    epochs: int = 100
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "sgd"
    val_split: float | None = None
    class_weights: bool = True
    augment: tuple[str, ...] = AUGMENTATIONS
    early_stopping: int = 10
    seed: int = 0
    steps_per_epoch: int | None = None
    labels: tuple[str, ...] = LABELS

    def check(self) -> None:
        check_augmentations(self.augment)
        if self.backbone not in BACKBONES and not Path(self.backbone).is_file():
            raise UsageError(
                f"--backbone {self.backbone!r}: choose {', '.join(BACKBONES)} or a weights file"
            )
        if self.backbone == "nsfw" and self.alpha != 1.0:
            raise UsageError(
                "--backbone nsfw is a MobileNetV2 with alpha 1.0: "
                "drop --alpha or choose another backbone"
            )
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"--optimizer {self.optimizer!r}: choose sgd or adam")
        if self.fine_tune_layers and not self.fine_tune_epochs:
            raise UsageError("--fine-tune N needs --fine-tune-epochs E > 0")
        if self.fine_tune_layers and self.backbone == "none":
            raise UsageError(
                "--fine-tune unfreezes a pretrained backbone; "
                "with --backbone none everything trains"
            )
        if self.input_size % 32:
            raise UsageError(f"--input-size {self.input_size} must be a multiple of 32")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.fine_tune_epochs


@dataclass
class TrainResult:
    run_dir: Path
    best_model: Path
    best_val_accuracy: float
    epochs_run: int
    corrupt_files: list[str]
    class_counts: dict[str, int]
    class_weights: dict[str, float] | None
    seconds: float


def _backbone(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise UsageError("the model has no nested backbone")


def load_nsfw_backbone(backbone) -> int:
    """Copy the pretrained NSFW model's MobileNetV2 weights into ``backbone`` by layer name."""
    from .models import pretrained

    source = {layer.name: layer for layer in pretrained(classes=5).layers}
    copied = 0
    for layer in backbone.layers:
        if layer.weights and layer.name in source:
            layer.set_weights(source[layer.name].get_weights())
            copied += 1
    if copied < 50:
        raise UsageError(
            f"only {copied} backbone layers matched the NSFW model: expected MobileNetV2 1.0"
        )
    return copied


def build_model(config: TrainConfig):
    from .models import build_classifier

    weights = {"imagenet": "imagenet", "none": None, "nsfw": None}.get(
        config.backbone, config.backbone
    )
    model = build_classifier(
        classes=len(config.labels),
        alpha=config.alpha,
        input_size=config.input_size,
        weights=weights,
    )
    if config.backbone == "nsfw":
        load_nsfw_backbone(_backbone(model))
    return model


def recalibrate_batchnorm(model, batches) -> None:
    """Set every trainable BatchNorm's moving statistics to the average over ``batches``.

    Needed when the backbone trains from random weights: with Keras's momentum of
    0.999 (tuned for ImageNet-length runs) the moving statistics of a short run stay
    far from the weights' real statistics, and inference mode predicts one class for
    every image. Averaging the batch statistics of a pass over the training images
    ("precise BatchNorm") fixes that without touching the weights.
    """
    import keras

    layers = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not layers:
        return
    momenta = [layer.momentum for layer in layers]
    weights = {id(layer): [v.numpy() for v in layer.non_trainable_weights] for layer in layers}
    try:
        for count, images in enumerate(batches):
            for layer in layers:
                layer.momentum = count / (count + 1)  # running mean of the batch statistics
            model(images, training=True)
    except Exception:
        for layer in layers:
            for variable, value in zip(layer.non_trainable_weights, weights[id(layer)]):
                variable.assign(value)
        raise
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def set_phase(model, config: TrainConfig, phase: int) -> None:
    """Phase 1: backbone frozen (unless it starts from random weights). Phase 2: top N
    backbone layers trainable, BatchNorm layers kept frozen (inference mode)."""
    import keras

    backbone = _backbone(model)
    if config.backbone == "none":
        backbone.trainable = True
        return
    backbone.trainable = phase == 2
    if phase == 2:
        for index, layer in enumerate(backbone.layers):
            top = index >= len(backbone.layers) - config.fine_tune_layers
            layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)


def compile_model(model, config: TrainConfig, phase: int) -> None:
    import keras

    rate = config.learning_rate if phase == 1 else config.learning_rate / 10
    optimizer = (
        keras.optimizers.SGD(rate, momentum=0.9)
        if config.optimizer == "sgd"
        else keras.optimizers.Adam(rate)
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _read_state(run_dir: Path) -> dict | None:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _write_state(run_dir: Path, state: dict) -> None:
    with atomic_path(run_dir / "state.json") as temporary:
        temporary.write_text(json.dumps(state, indent=2))


def _trim_csv(path: Path, keep_epochs: int) -> None:
    """Keep the header and the rows of epochs < keep_epochs (a resumed run rewrites the rest)."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < keep_epochs]
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def _plot_curves(csv_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for key, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        axis.plot(epochs, [float(r[key]) for r in rows], label=f"train {key}")
        axis.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label=f"validation {key}")
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.legend()
    figure.tight_layout()
    with atomic_path(out) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def _strategy():
    """MirroredStrategy and mixed precision when several GPUs are present; default otherwise."""
    from ._tf import import_tensorflow

    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(config: TrainConfig, *, resume: bool = False, log=print) -> TrainResult:
    """Train per ``config``; with ``resume`` continue the run in ``config.out``."""
    import keras

    from ._tf import import_tensorflow

    tf = import_tensorflow()
    run_dir = Path(config.out)
    state = _read_state(run_dir)
    if resume:
        if state is None or not (run_dir / "last.keras").is_file():
            raise UsageError(f"{run_dir}: nothing to resume (no state.json and last.keras)")
        config = TrainConfig(
            **{
                **state["config"],
                "augment": tuple(state["config"]["augment"]),
                "labels": tuple(state["config"]["labels"]),
            }
        )
    elif state is not None:
        raise UsageError(
            f"{run_dir} already holds a run: pass --resume to continue it or choose another --out"
        )
    config.check()
    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    dataset = data.scan(
        config.data_dir, class_names=config.labels, val_split=config.val_split, seed=config.seed
    )
    size = (config.input_size, config.input_size)
    log(
        f"decoding {len(dataset.train.paths)} training and {len(dataset.val.paths)} "
        f"validation files (validation: {dataset.val_source})"
    )
    train_x, train_y, train_bad = data.decode_split(
        dataset.train, size, run_dir / "cache" / "train.npy"
    )
    val_x, val_y, val_bad = data.decode_split(dataset.val, size, run_dir / "cache" / "val.npy")
    corrupt = [str(e) for e in train_bad + val_bad]
    with atomic_path(run_dir / "corrupt.txt") as temporary:
        temporary.write_text("".join(line + "\n" for line in corrupt))
    for line in corrupt:
        log(f"skipped unreadable file {line}")
    counts = {name: int((train_y == i).sum()) for i, name in enumerate(config.labels)}
    log(
        "training images per class: "
        + ", ".join(f"{n} {c}" for n, c in counts.items())
        + f" (largest / smallest: {max(counts.values()) / max(min(counts.values()), 1):.1f}x)"
    )
    weights = data.class_weights(train_y, len(config.labels)) if config.class_weights else None
    if weights:
        log(
            "class weights: " + ", ".join(f"{config.labels[i]} {w:.2f}" for i, w in weights.items())
        )

    train_ds = data.make_tf_dataset(
        train_x,
        train_y,
        batch_size=config.batch_size,
        training=True,
        augment=config.augment,
        seed=config.seed,
    )
    val_ds = data.make_tf_dataset(val_x, val_y, batch_size=config.batch_size, training=False)

    initial_epoch = 0
    with _strategy().scope():
        if resume:
            model = keras.models.load_model(run_dir / "last.keras")
            initial_epoch = state["epochs_done"]
            log(f"resuming after epoch {initial_epoch} of {config.total_epochs}")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            model = build_model(config)
            set_phase(model, config, 1)
            compile_model(model, config, 1)
    (run_dir / "labels.txt").write_text("\n".join(config.labels) + "\n")
    best = state["best_val_accuracy"] if resume else -1.0
    # Which phase the run is in and the epoch phase 2 ends at (phase 1 may stop early).
    phase = (
        {"phase": state.get("phase", 1), "phase2_end": state.get("phase2_end")}
        if resume
        else {"phase": 1, "phase2_end": None}
    )
    csv_path = run_dir / "metrics.csv"
    _trim_csv(csv_path, initial_epoch)

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal best
            accuracy = float(logs.get("val_accuracy", 0.0))
            if accuracy > best:
                best = accuracy
                with atomic_path(run_dir / "best.keras") as temporary:
                    self.model.save(temporary)
            with atomic_path(run_dir / "last.keras") as temporary:
                self.model.save(temporary)
            _write_state(
                run_dir,
                {
                    "config": asdict(config),
                    "epochs_done": epoch + 1,
                    "best_val_accuracy": best,
                    **phase,
                },
            )

    class PreciseBatchNorm(keras.callbacks.Callback):
        """Before each validation, recompute BatchNorm statistics on un-augmented images."""

        def on_test_begin(self, logs=None):
            recalibrate_batchnorm(self.model, (x for x, _ in calibration_ds.take(16)))

    calibration_ds = data.make_tf_dataset(
        train_x, train_y, batch_size=config.batch_size, training=False
    )

    def phase_callbacks():
        extra = [PreciseBatchNorm()] if config.backbone == "none" else []
        return extra + [
            keras.callbacks.CSVLogger(str(csv_path), append=True),
            Progress(),  # after the CSV row, so a crash never leaves a saved epoch without its row
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=math.sqrt(0.1), patience=5
            ),
            keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.early_stopping),
            keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard")),
        ]

    common = dict(
        validation_data=val_ds,
        class_weight=weights,
        verbose=1 if sys.stderr.isatty() else 2,  # bars on a terminal, a line per epoch in logs
        steps_per_epoch=config.steps_per_epoch,
    )

    def fit(start: int, until: int) -> int:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for --json
            model.fit(
                train_ds, epochs=until, initial_epoch=start, callbacks=phase_callbacks(), **common
            )
        return _read_state(run_dir)["epochs_done"]

    if phase["phase"] == 1 and initial_epoch < config.epochs:
        initial_epoch = fit(initial_epoch, config.epochs)
    if config.fine_tune_epochs:
        if phase["phase"] == 1:
            log(f"fine-tuning the top {config.fine_tune_layers} backbone layers")
            phase.update(phase=2, phase2_end=initial_epoch + config.fine_tune_epochs)
            set_phase(model, config, 2)
            compile_model(model, config, 2)
        if initial_epoch < phase["phase2_end"]:
            fit(initial_epoch, phase["phase2_end"])
    _plot_curves(csv_path, run_dir / "curves.png")
    final = _read_state(run_dir)
    return TrainResult(
        run_dir=run_dir,
        best_model=run_dir / "best.keras",
        best_val_accuracy=final["best_val_accuracy"],
        epochs_run=final["epochs_done"],
        corrupt_files=corrupt,
        class_counts=counts,
        class_weights={config.labels[i]: w for i, w in weights.items()} if weights else None,
        seconds=round(time.perf_counter() - started, 1),
    )


def seconds_per_step(
    alpha: float = 1.0, input_size: int = 224, batch_size: int = 32, steps: int = 5
):
    """Median seconds per training step of the seed setup (frozen backbone, head trained,
    full augmentation in the input pipeline) and the share of step time spent waiting for data."""
    config = TrainConfig(
        data_dir="",
        out="",
        alpha=alpha,
        input_size=input_size,
        backbone="none",
        batch_size=batch_size,
    )
    model = build_model(config)  # random weights: the time does not depend on their values
    _backbone(model).trainable = False
    compile_model(model, config, 1)
    x = np.random.default_rng(0).integers(
        0, 255, (batch_size * 2, input_size, input_size, 3), np.uint8
    )
    y = np.arange(batch_size * 2) % 3
    dataset = data.make_tf_dataset(
        x,
        y,
        batch_size=batch_size,
        training=True,
        augment=AUGMENTATIONS,
    )
    iterator = iter(dataset.repeat())
    batch = next(iterator)
    model.train_on_batch(*batch)  # trace
    waits, totals = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        model.train_on_batch(*batch)
        t2 = time.perf_counter()
        waits.append(t1 - t0)
        totals.append(t2 - t0)
    return float(np.median(totals)), float(sum(waits) / sum(totals))
