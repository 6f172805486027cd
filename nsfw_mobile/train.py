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
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data, zoo
from .atomic import atomic_path
from .data import AUGMENTATIONS, check_augmentations
from .errors import UsageError
from .labels import LABELS
from .metadata import ModelContract, nsfw_labels_by_name, write_keras_contract

BACKBONES = ("imagenet", "nsfw", "mid", "none")
"""Named backbone starts; ``nsfw`` and ``mid`` (and the zoo names of those models) are the
MobileNetV2 features of the zoo's nsfwjs-mobilenet-v2 and nsfwjs-mobilenet-v2-mid."""


@dataclass
class TrainConfig:
    data_dir: str
    out: str
    alpha: float | None = None
    """MobileNetV2 width; None: the backbone's (1.4 for mid, else 1.0)."""
    input_size: int = 224
    backbone: str = "imagenet"
    """imagenet | nsfw | mid | a zoo name | none | path to a weights file"""
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
    labels: tuple[str, ...] | None = None
    """Classes in output order; None: from the dataset's folders (after ``merge``)."""
    merge: str = ""
    """Folders folded into classes, such as "drawings=neutral,hentai=porn"."""
    nsfw_labels: tuple[str, ...] | None = None
    """Classes that count as NSFW; None: those whose names say so (porn, sexy, hentai, ...)."""
    name: str | None = None
    version: str = ""
    author: str = ""
    license: str = ""
    description: str = ""

    def backbone_model(self, log=None):
        """The zoo model whose MobileNetV2 the backbone starts from (a ``resolve.ModelRef``,
        SOURCE), or None. ``--backbone`` keeps its own words (``BACKBONES``: nsfw is the
        pretrained model, mid the zoo's mid); any other zoo name goes through the resolver
        like every command's model (a path such as ./mid is a weights file)."""
        from .resolve import SOURCE, is_name, resolve_model

        word = {"nsfw": zoo.DEFAULT.key}.get(self.backbone)  # "mid" is a zoo name already
        if word is None and not is_name(self.backbone):
            return None
        ref = resolve_model(word or self.backbone, use=SOURCE, log=log)
        named = ref.zoo_model
        if named.backbone_alpha is None:
            usable = [m.key for m in zoo.ZOO if m.backbone_alpha is not None]
            raise UsageError(
                f"--backbone {self.backbone}: {named.key} is not a MobileNetV2, which train "
                f"builds; choose {', '.join(usable)}"
            )
        return ref

    def zoo_backbone(self):
        """The zoo model whose MobileNetV2 the backbone starts from, or None."""
        ref = self.backbone_model()
        return None if ref is None else ref.zoo_model

    @property
    def width(self) -> float:
        """The MobileNetV2 width to build: --alpha, else the backbone's."""
        if self.alpha is not None:
            return self.alpha
        named = self.zoo_backbone()
        return named.backbone_alpha if named else 1.0

    def check(self) -> None:
        check_augmentations(self.augment)
        named = self.zoo_backbone()
        if self.backbone not in BACKBONES and not named and not Path(self.backbone).is_file():
            raise UsageError(
                f"--backbone {self.backbone!r}: choose {', '.join(BACKBONES)}, a zoo model's "
                "name (nsfw-mobile models) or a weights file"
            )
        if named and self.alpha not in (None, named.backbone_alpha):
            raise UsageError(
                f"--backbone {self.backbone} is a MobileNetV2 with alpha "
                f"{named.backbone_alpha}: drop --alpha or choose another backbone"
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

    def contract(self) -> ModelContract:
        """The trained model's contract: its classes, NSFW labels and provenance."""
        return ModelContract(
            labels=tuple(self.labels),
            nsfw_labels=(
                tuple(self.nsfw_labels)
                if self.nsfw_labels is not None
                else nsfw_labels_by_name(self.labels)
            ),
            input_size=(self.input_size, self.input_size),
            name=self.name or Path(self.out).name,
            version=self.version,
            author=self.author,
            license=self.license,
            description=self.description
            or f"Image classifier ({', '.join(self.labels)}) trained with nsfw-mobile.",
        )


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


def load_nsfw_backbone(backbone, name: str = "nsfwjs-mobilenet-v2") -> int:
    """Copy a zoo model's MobileNetV2 weights into ``backbone`` (a Keras MobileNetV2 of the
    same width); returns the number of layers set.

    A layers model (the default) carries Keras's own MobileNetV2: weights are copied by
    layer name. A graph model (mid) has its BatchNorms folded into convolution biases:
    its convolutions are matched in order, and each Keras BatchNorm after them is set to
    pass the bias through (mean 0, variance 1 - epsilon, scale 1, offset the bias).
    """
    from .models import pretrained

    named = zoo.lookup(name)
    source = pretrained(classes=5, name=named.key)
    if named.format == "graph":
        return _copy_folded_backbone(source, backbone, named)
    by_name = {layer.name: layer for layer in source.layers}
    copied = 0
    for layer in backbone.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
            copied += 1
    if copied < 50:
        raise UsageError(
            f"only {copied} backbone layers matched the NSFW model: expected MobileNetV2 1.0"
        )
    return copied


_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D")


def _copy_folded_backbone(source, backbone, named) -> int:
    import keras

    scaling = [
        (float(layer.scale), float(layer.offset))
        for layer in source.layers
        if isinstance(layer, keras.layers.Rescaling)
    ]
    if scaling != [named.backbone_input]:
        raise UsageError(
            f"{named.key}: its graph scales the input by {scaling}, the zoo expects "
            f"{named.backbone_input}"
        )
    sources = [layer for layer in source.layers if type(layer).__name__ in _CONVOLUTIONS]
    layers = backbone.layers
    targets = [i for i, layer in enumerate(layers) if type(layer).__name__ in _CONVOLUTIONS]
    if len(sources) != len(targets):
        raise UsageError(
            f"{named.key} has {len(sources)} convolutions, the MobileNetV2 built has "
            f"{len(targets)}: expected MobileNetV2 {named.backbone_alpha:g}"
        )
    for layer, index in zip(sources, targets):
        kernel, bias = layer.get_weights()
        target, norm = layers[index], layers[index + 1]
        if type(target) is not type(layer) or tuple(target.kernel.shape) != kernel.shape:
            raise UsageError(
                f"{named.key}: {layer.name} {kernel.shape} does not fit {target.name} "
                f"{tuple(target.kernel.shape)}: expected MobileNetV2 {named.backbone_alpha:g}"
            )
        if not isinstance(norm, keras.layers.BatchNormalization):
            raise UsageError(f"{target.name} is not followed by a BatchNormalization")
        target.set_weights([kernel])
        ones = np.ones_like(bias)
        norm.set_weights([ones, bias, np.zeros_like(bias), ones - np.float32(norm.epsilon)])
    return 2 * len(targets)


def build_model(config: TrainConfig):
    from .models import build_classifier

    named = config.zoo_backbone()
    weights = (
        None
        if named or config.backbone == "none"
        else "imagenet"
        if config.backbone == "imagenet"
        else config.backbone
    )
    try:
        model = build_classifier(
            classes=len(config.labels),
            alpha=config.width,
            input_size=config.input_size,
            weights=weights,
            backbone_input=named.backbone_input if named else (1.0, 0.0),
        )
    except (ValueError, OSError) as exc:  # Keras's errors for a weights file that does not fit
        if weights in (None, "imagenet"):
            raise
        raise UsageError(f"--backbone {weights}: cannot load these weights ({exc})") from None
    if named:
        load_nsfw_backbone(_backbone(model), named.key)
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


@contextlib.contextmanager
def _process_state_kept():
    """Seeds, op determinism and the Keras dtype policy a run sets, restored afterwards.

    Training seeds Python's, NumPy's, TensorFlow's and Keras's global generators,
    turns on TensorFlow's op determinism and, on GPUs, a mixed-precision policy;
    none of that may outlive the call in the caller's process.
    """
    import random

    import keras
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context
    from tensorflow.python.framework import config as tf_config

    saved = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "tensorflow": context.global_seed(),
        "keras": global_state.get_global_attribute("global_random_seed"),
        "generator": global_state.get_global_attribute("global_seed_generator"),
        "deterministic": tf_config.is_op_determinism_enabled(),
        "policy": keras.mixed_precision.global_policy(),
    }
    try:
        yield
    finally:
        random.setstate(saved["python"])
        np.random.set_state(saved["numpy"])
        import tensorflow as tf

        tf.random.set_seed(saved["tensorflow"])
        global_state.set_global_attribute("global_random_seed", saved["keras"])
        global_state.set_global_attribute("global_seed_generator", saved["generator"])
        if not saved["deterministic"]:
            tf_config.disable_op_determinism()
        keras.mixed_precision.set_global_policy(saved["policy"])


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


def _run_config(config: TrainConfig, run_dir: Path, resume: bool) -> tuple[TrainConfig, dict]:
    """The config to train with (a resumed run's own) and the run's saved state."""
    state = _read_state(run_dir)
    if resume:
        if state is None or not (run_dir / "last.keras").is_file():
            raise UsageError(f"{run_dir}: nothing to resume (no state.json and last.keras)")
        saved = state["config"]
        tuples = {
            key: tuple(saved[key])
            for key in ("augment", "labels", "nsfw_labels")
            if saved.get(key) is not None
        }
        config = TrainConfig(**{**saved, **tuples})
    elif state is not None:
        raise UsageError(
            f"{run_dir} already holds a run: pass --resume to continue it or choose another --out"
        )
    return config, state or {}


@dataclass
class _Data:
    train: object
    val: object
    calibration: object
    counts: dict[str, int]
    weights: dict[int, float] | None
    corrupt: list[str]


def _prepare_data(config: TrainConfig, dataset, run_dir: Path, log) -> _Data:
    """Decode every file once (corrupt ones listed and skipped) and build the pipelines."""
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
    batch = config.batch_size
    return _Data(
        train=data.make_tf_dataset(
            train_x,
            train_y,
            batch_size=batch,
            training=True,
            augment=config.augment,
            seed=config.seed,
        ),
        val=data.make_tf_dataset(val_x, val_y, batch_size=batch, training=False),
        calibration=data.make_tf_dataset(train_x, train_y, batch_size=batch, training=False),
        counts=counts,
        weights=weights,
        corrupt=corrupt,
    )


def _open_model(config: TrainConfig, run_dir: Path, state: dict, resume: bool, log):
    """The model to train and the epoch it starts at: last.keras on resume, else a new one."""
    import keras

    with _strategy().scope():
        if resume:
            log(f"resuming after epoch {state['epochs_done']} of {config.total_epochs}")
            return keras.models.load_model(run_dir / "last.keras"), state["epochs_done"]
        model = build_model(config)
        set_phase(model, config, 1)
        compile_model(model, config, 1)
        return model, 0


class _Run:
    """One training run's callbacks and phases, writing into its run folder."""

    def __init__(self, config, model, prepared: _Data, run_dir: Path, state: dict, resume: bool):
        self.config, self.model, self.data, self.run_dir = config, model, prepared, run_dir
        self.best = state["best_val_accuracy"] if resume else -1.0
        # Which phase the run is in and the epoch phase 2 ends at (phase 1 may stop early).
        self.phase = {"phase": state.get("phase", 1), "phase2_end": state.get("phase2_end")}
        self.csv_path = run_dir / "metrics.csv"
        self.contract = config.contract()

    def _save_epoch(self, model, epoch: int, logs) -> None:
        accuracy = float((logs or {}).get("val_accuracy", 0.0))
        names = ("best.keras", "last.keras") if accuracy > self.best else ("last.keras",)
        self.best = max(self.best, accuracy)
        for name in names:
            with atomic_path(self.run_dir / name) as temporary:
                model.save(temporary)
                write_keras_contract(temporary, self.contract)
        _write_state(
            self.run_dir,
            {
                "config": asdict(self.config),
                "epochs_done": epoch + 1,
                "best_val_accuracy": self.best,
                **self.phase,
            },
        )

    def callbacks(self) -> list:
        import keras

        run = self

        class Progress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                run._save_epoch(self.model, epoch, logs)

        class PreciseBatchNorm(keras.callbacks.Callback):
            """Before each validation, recompute BatchNorm statistics on un-augmented images."""

            def on_test_begin(self, logs=None):
                recalibrate_batchnorm(self.model, (x for x, _ in run.data.calibration.take(16)))

        extra = [PreciseBatchNorm()] if self.config.backbone == "none" else []
        return extra + [
            keras.callbacks.CSVLogger(str(self.csv_path), append=True),
            Progress(),  # after the CSV row, so a crash never leaves a saved epoch without its row
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=math.sqrt(0.1), patience=5
            ),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=self.config.early_stopping
            ),
            keras.callbacks.TensorBoard(log_dir=str(self.run_dir / "tensorboard")),
        ]

    def fit(self, start: int, until: int) -> int:
        """Train epochs [start, until); returns the epochs done (early stopping may cut it)."""
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints progress; stdout is --json's
            self.model.fit(
                self.data.train,
                epochs=until,
                initial_epoch=start,
                callbacks=self.callbacks(),
                validation_data=self.data.val,
                class_weight=self.data.weights,
                verbose=1 if sys.stderr.isatty() else 2,  # bars on a terminal, lines in logs
                steps_per_epoch=self.config.steps_per_epoch,
            )
        return _read_state(self.run_dir)["epochs_done"]

    def phases(self, initial_epoch: int, log) -> None:
        config = self.config
        if self.phase["phase"] == 1 and initial_epoch < config.epochs:
            initial_epoch = self.fit(initial_epoch, config.epochs)
        if not config.fine_tune_epochs:
            return
        if self.phase["phase"] == 1:
            log(f"fine-tuning the top {config.fine_tune_layers} backbone layers")
            self.phase.update(phase=2, phase2_end=initial_epoch + config.fine_tune_epochs)
            set_phase(self.model, config, 2)
            compile_model(self.model, config, 2)
        if initial_epoch < self.phase["phase2_end"]:
            self.fit(initial_epoch, self.phase["phase2_end"])


def train(config: TrainConfig, *, resume: bool = False, log=print) -> TrainResult:
    """Train per ``config``; with ``resume`` continue the run in ``config.out``.

    The model is built (and its options checked) before any file is decoded, so
    a bad option fails in seconds. The global seeds, op determinism and dtype
    policy the run sets are restored when it returns.
    """
    run_dir = Path(config.out)
    config, state = _run_config(config, run_dir, resume)
    config.check()
    dataset = data.scan(
        config.data_dir,
        class_names=config.labels,
        merge=data.parse_merge(config.merge),
        val_split=config.val_split,
        seed=config.seed,
    )
    config = dataclasses.replace(config, labels=dataset.class_names)
    contract = config.contract()  # a bad --nsfw-labels fails here, before any decoding
    log(
        f"classes: {', '.join(contract.labels)}; NSFW: "
        + (", ".join(contract.nsfw_labels) or "none (pass --nsfw-labels for an nsfw_score)")
    )
    for twin, held_out in data.duplicates_across(dataset):
        log(f"duplicate across splits (same SHA-256): {held_out} is also {twin}")
    with _process_state_kept():
        return _train(config, dataset, run_dir, state, resume, log)


def _train(config, dataset, run_dir: Path, state: dict, resume: bool, log) -> TrainResult:
    import keras

    from ._tf import import_tensorflow

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    import_tensorflow().config.experimental.enable_op_determinism()
    model, initial_epoch = _open_model(config, run_dir, state, resume, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    prepared = _prepare_data(config, dataset, run_dir, log)
    (run_dir / "labels.txt").write_text("\n".join(config.labels) + "\n")
    run = _Run(config, model, prepared, run_dir, state, resume)
    _trim_csv(run.csv_path, initial_epoch)
    run.phases(initial_epoch, log)
    _plot_curves(run.csv_path, run_dir / "curves.png")
    final = _read_state(run_dir)
    weights = prepared.weights
    return TrainResult(
        run_dir=run_dir,
        best_model=run_dir / "best.keras",
        best_val_accuracy=final["best_val_accuracy"],
        epochs_run=final["epochs_done"],
        corrupt_files=prepared.corrupt,
        class_counts=prepared.counts,
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
        labels=LABELS,
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
