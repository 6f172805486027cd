"""One way to name a model: the resolver's rules, the same in every command.

The table test runs each case through every command that takes a model and records what
``resolve_model`` made of it; the commands stop where they would load the model (the
spies below raise ``Stopped`` there), so the table costs no model loading.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nsfw_mobile import resolve, zoo
from nsfw_mobile.cli import EXIT_USAGE, main
from nsfw_mobile.errors import MissingFileError, UsageError
from nsfw_mobile.export import MIN_CALIBRATION_IMAGES
from nsfw_mobile.formats import KERAS, PRETRAINED_TFLITE, TFJS_LAYERS, TFLITE
from nsfw_mobile.resolve import MEASURE, RUN, SOURCE, resolve_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"  # the pretrained model's release folder
MID = zoo.MOBILENET_V2_MID


class Stopped(Exception):
    """Raised by the spies where a command would start loading its model."""


@pytest.fixture
def place(tmp_path, monkeypatch, samples):
    """A working folder with a local TF.js model folder called ``mid`` (the default model's
    files: 5 classes, not the zoo's mid), a .keras file, labelled data and a photo."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NSFW_MOBILE_CACHE", str(tmp_path / "cache"))
    shutil.copytree(ROOT / "nsfw_mobile" / "pretrained" / "mobilenet_v2", tmp_path / "mid")
    (tmp_path / "own.keras").write_bytes(b"PK")  # only its suffix matters before loading
    for label in ("Neutral", "Porn"):
        (tmp_path / "data" / label).mkdir(parents=True)
        shutil.copy(samples[0], tmp_path / "data" / label / "a.jpg")
    shutil.copy(samples[0], tmp_path / "photo.jpg")
    return tmp_path


@pytest.fixture
def resolved(monkeypatch):
    """Every ModelRef a command makes, in order; loading a model raises ``Stopped``."""
    made = []
    real = resolve.resolve_model
    import nsfw_mobile.bench
    import nsfw_mobile.evaluate
    import nsfw_mobile.release
    import nsfw_mobile.train
    import nsfw_mobile.validate  # noqa: F401 (their names of resolve_model get the spy)

    def recording(*args, **kwargs):
        ref = real(*args, **kwargs)
        made.append(ref)
        return ref

    def stop(self, *args, **kwargs):
        raise Stopped(self)

    for name, module in list(sys.modules.items()):
        if name.startswith("nsfw_mobile") and getattr(module, "resolve_model", None) is real:
            monkeypatch.setattr(module, "resolve_model", recording)
    for method in ("open_runner", "load_source", "fetch"):
        monkeypatch.setattr(resolve.ModelRef, method, stop)
    from nsfw_mobile import bench, formats

    monkeypatch.setattr(bench, "bench", lambda models, **options: stop(models))
    monkeypatch.setattr(formats, "inspect_file", lambda path: stop(path))
    return made


COMMANDS = {
    "predict": lambda m: ["predict", "photo.jpg", "--model", m, "--verbose"],
    "evaluate": lambda m: ["evaluate", m, "data"],
    "bench": lambda m: ["bench", m, "--runs", "1", "--seconds", "0"],
    "validate": lambda m: ["validate", m],
    "validate --reference": lambda m: ["validate", str(PRETRAINED_TFLITE), "--reference", m],
    "inspect": lambda m: ["inspect", m],
    "convert": lambda m: ["convert", m, "--to", "tflite", "--out", "dist"],
    "release": lambda m: ["release", m, "--out", "release"],
    "release --check --reference": lambda m: ["release", "--check", str(MODELS), "--reference", m],
    "train --backbone": lambda m: ["train", "data", "--out", "run", "--backbone", m],
    "serve": lambda m: ["serve", m, "--port", "0"],
}
"""Every command that takes a model, with the model in its place."""
USES = {
    "predict": RUN,
    "evaluate": RUN,
    "bench": MEASURE,
    "validate": MEASURE,
    "inspect": MEASURE,
    "validate --reference": SOURCE,
    "convert": SOURCE,
    "release": SOURCE,
    "release --check --reference": SOURCE,
    "train --backbone": SOURCE,
    "serve": RUN,
}


def _run(command: str, model: str, resolved):
    before = len(resolved)
    result = CliRunner().invoke(main, COMMANDS[command](model))
    made = [r for r in resolved[before:] if r.given == model]
    return result, made


def test_every_command_that_takes_a_model_is_in_the_table():
    named = {c.split()[0] for c in COMMANDS}
    takers = {
        name
        for name, command in main.commands.items()
        if any(getattr(p.type, "name", "") == "model" for p in command.params)
    }
    assert takers <= named and "train" in named
    assert set(USES) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_zoo_name_is_the_zoo_model_in_every_command_even_beside_a_folder_of_its_name(
    place, resolved, command
):
    assert (place / "mid" / "model.json").is_file()  # the folder beside it
    result, made = _run(command, "mid", resolved)
    assert made, (command, result.output)
    assert all(r.zoo_model is MID and r.path is None for r in made), made
    assert {r.use for r in made} == {USES[command]}
    if command == "predict":
        assert f"model: {MID.key}'s Keras reference" in result.stderr


@pytest.mark.parametrize("given", ["./mid", "mid/", "ABSOLUTE"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_path_is_never_a_zoo_name_in_any_command(place, resolved, command, given):
    given = str(place / "mid") if given == "ABSOLUTE" else given
    result, made = _run(command, given, resolved)
    if command == "train --backbone":  # its own words, zoo names; a path is a weights file
        assert made == [] and "weights file" in result.stderr, result.output
        return
    assert made, (command, result.output)
    assert all(r.zoo_model is None and r.path.resolve() == place / "mid" for r in made), made
    assert all(r.file_type is TFJS_LAYERS for r in made)
    if command == "predict":
        assert f"model: {given}" in result.stderr and "(tfjs): a model file" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_a_release_folder_is_its_files_or_refused_as_a_source(place, resolved, command):
    result, made = _run(command, str(MODELS), resolved)
    if command == "train --backbone":
        assert made == [] and result.exit_code == EXIT_USAGE
        return
    if USES[command] == SOURCE:
        assert result.exit_code == EXIT_USAGE, result.output
        assert "is a release folder, not a source model" in result.stderr
        assert "give nsfwjs-mobilenet-v2" in result.stderr  # the zoo model it was made from
        return
    (ref,) = made
    if USES[command] == RUN:  # its fastest validated file here
        assert ref.kind == "release" and ref.path.parent == MODELS and ref.engine is not None
    else:  # the files its manifest promises
        assert ref.path == MODELS and {p.path.parent for p in ref.parts} == {MODELS}
        assert len(ref.parts) > 1


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_path_is_one_error_in_every_command(place, resolved, command):
    result, _ = _run(command, "./no-such-model", resolved)
    if command == "train --backbone":  # a weights file that is not there
        assert result.exit_code == EXIT_USAGE
        return
    assert result.exit_code == EXIT_USAGE, (command, result.output)
    assert "./no-such-model: no such file or folder" in result.stderr
    with pytest.raises(MissingFileError):
        resolve_model("./no-such-model", use=USES[command])


UNSAFE_TAKERS = ("predict", "evaluate", "convert")


@pytest.mark.parametrize("command", UNSAFE_TAKERS)
@pytest.mark.parametrize("unsafe", [False, True])
def test_a_keras_file_with_and_without_unsafe(place, resolved, command, unsafe):
    result, made = _run(command, "own.keras", resolved) if not unsafe else (None, None)
    if unsafe:
        before = len(resolved)
        result = CliRunner().invoke(main, [*COMMANDS[command]("own.keras"), "--unsafe"])
        made = resolved[before:]
    (ref,) = [r for r in made if r.given == "own.keras"]
    assert ref.file_type is KERAS and ref.path == Path("own.keras")
    assert ref.allow_unsafe is unsafe
    assert isinstance(result.exception, Stopped), result.output  # it got as far as loading
    refused = CliRunner().invoke(main, [*COMMANDS[command]("mid"), "--unsafe"])
    assert refused.exit_code == EXIT_USAGE
    assert "--unsafe applies to .keras model files only" in refused.stderr


def test_the_rules_in_order(place, monkeypatch):
    assert resolve_model(None, use=RUN).path == PRETRAINED_TFLITE
    assert resolve_model(None, use=SOURCE).zoo_model is zoo.DEFAULT
    assert resolve_model("mid", use=MEASURE).zoo_model is MID
    assert resolve_model(Path("mid"), use=MEASURE).path == Path("mid")  # a Path: a file
    assert resolve_model("mid/", use=RUN).file_type is TFJS_LAYERS
    assert resolve_model("pretrained", use=RUN).engine is None  # Keras, no release cached
    assert resolve_model(PRETRAINED_TFLITE, use=RUN).engine == "litert"
    with pytest.raises(UsageError, match="release folder, not a source model"):
        resolve_model(MODELS, use=SOURCE)
    ref = resolve_model("./mid", use=RUN)
    assert ref.spec == "./mid" and resolve_model(ref.spec).path == ref.path
    assert json.loads(json.dumps(ref.to_dict()))["file_type"] == "tfjs"


def test_a_zoo_name_runs_its_cached_release_and_says_so(place, samples):
    """`models --fetch NAME --release` keeps a release in the cache (copied here: the
    repository's models/ is the pretrained model's release); RUN then takes its fastest
    validated file, MEASURE and SOURCE keep the Keras reference."""
    folder = resolve.zoo_release_folder(zoo.DEFAULT)
    shutil.copytree(MODELS, folder)
    ref = resolve_model("pretrained", use=RUN)
    assert ref.kind == "zoo" and ref.zoo_model is zoo.DEFAULT and ref.path.parent == folder
    assert "cached release" in ref.why and ref.engine in ("litert", "onnxruntime", "openvino")
    assert resolve_model("pretrained", use=MEASURE).path is None
    shown = CliRunner().invoke(main, ["predict", str(samples[0]), "--model", "pretrained",
                                      "--json", "--verbose"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    described = json.loads(shown.stderr.splitlines()[0])["model"]
    assert described["zoo"] == zoo.DEFAULT.key and described["engine"] == ref.engine
    assert Path(described["model"]).parent == folder
    listed = CliRunner().invoke(main, ["models", "--json"])
    assert {m["key"]: m["release"] for m in json.loads(listed.stdout)}[zoo.DEFAULT.key] == str(
        folder
    )
    other = json.loads((folder / "manifest.json").read_text())
    other["source"]["sha256"] = "0" * 64  # a release of other weights is not this model
    (folder / "manifest.json").write_text(json.dumps(other))
    assert resolve_model("pretrained", use=RUN).path is None


def test_predict_follows_model_through_at_most_six_modules(place, samples):
    """From parsing --model to opening the runner, ``predict`` enters at most 6 modules of
    the package on the model's path (calls that receive the model or its ModelRef, and
    what they call), counted with sys.setprofile."""
    for model in (str(PRETRAINED_TFLITE), "./mid", "pretrained", None):
        entered = _modules_following(model, samples[0])
        assert 1 <= len(entered) <= 6, (model, sorted(entered))
        assert "nsfw_mobile.resolve" in entered


def _modules_following(model, image) -> set[str]:
    given = model
    args = ["predict", str(image)] + ([] if model is None else ["--model", model])
    entered: set[str] = set()
    done = []
    roots, imports = [], []  # calls on the model's path; module bodies run by an import

    def carries(frame) -> bool:
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals.get(name) for name in names]
        return any(
            isinstance(v, resolve.ModelRef) or (given is not None and v == given) for v in values
        )

    def profile(frame, event, arg):
        if done:
            return
        module = frame.f_globals.get("__name__", "")
        if event == "call" and frame.f_code.co_name == "<module>":
            imports.append(frame)  # an import runs a module's body: not the model's path
        elif event == "return" and imports and imports[-1] is frame:
            imports.pop()
        elif imports or not module.startswith("nsfw_mobile"):
            return
        elif event == "call":
            if frame.f_code.co_name == "open" and module.startswith("nsfw_mobile.runtime."):
                entered.add(module)
                done.append(module)  # the runner opens: the end of the path
                return
            callback = frame.f_code.co_name == "predict" and module == "nsfw_mobile.cli.predict"
            if roots or (carries(frame) and not callback):
                roots.append(frame)
                entered.add(module)
        elif event == "return" and roots and roots[-1] is frame:
            roots.pop()

    sys.setprofile(profile)
    try:
        CliRunner().invoke(main, args)
    finally:
        sys.setprofile(None)
    return entered


# ------------------------------------------------------------------ registry-driven rules


def test_batch_size_with_onnx_lanes_is_refused_in_one_line_or_batches(samples):
    onnx = str(MODELS / "nsfw_int8.onnx")
    args = ["predict", str(samples[0]), str(samples[1]), "--model", onnx, "--batch-size", "8"]
    refused = CliRunner().invoke(main, [*args, "--workers", "2"])
    assert refused.exit_code == EXIT_USAGE, refused.output
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "runs in 2 lanes" in refused.stderr and "--workers 1" in refused.stderr
    batched = CliRunner().invoke(main, [*args, "--workers", "1", "--json"])
    assert batched.exit_code == 0, batched.output
    assert len(batched.stdout.splitlines()) == 2
    tflite = CliRunner().invoke(
        main, ["predict", str(samples[0]), "--model", str(PRETRAINED_TFLITE), "--batch-size", "8"]
    )
    assert tflite.exit_code == EXIT_USAGE and "is tflite, one image per call" in tflite.stderr
    assert TFLITE.batched is False and KERAS.batched and not KERAS.lanes


def _help(*args) -> str:
    """A command's --help without its line breaks (help wraps inside words at hyphens)."""
    return "".join(CliRunner().invoke(main, [*args, "--help"]).stdout.split())


def _bare(text: str) -> str:
    return "".join(text.split())


def test_help_lists_are_the_registrys(monkeypatch):
    from nsfw_mobile import formats
    from nsfw_mobile.cli.common import fill_help

    targets, keys = _bare(formats.targets_help()), _bare(formats.formats_help())
    assert "onnx" in targets and "onnx-int8" in keys
    assert targets in _help("convert") and targets in _help("train")
    assert keys in _help("models") and keys in _help("convert")
    for command in ("predict", "evaluate", "inspect", "validate"):
        assert _bare(formats.file_types_help()) in _help(command), command
    assert _bare(formats.batched_help()) in _help("predict")
    calibration = f"atleast{MIN_CALIBRATION_IMAGES};"
    assert calibration in _help("convert") and "atleast20" not in _help("convert")
    # generated, not typed: a registry with one more target says so in the help
    monkeypatch.setattr(formats, "TARGETS", (*formats.TARGETS, "newformat"))
    command = click.Command("x", help="Targets: {targets}.")
    fill_help(command)
    assert command.help == f"Targets: {formats.targets_help()}."
    assert command.help.endswith(", newformat.")


def test_converters_implement_exactly_the_registrys_rows():
    """The converters sit below the registry and check their own arguments: what each
    implements is what the registry offers, no more, no less."""
    from nsfw_mobile import formats
    from nsfw_mobile.export import coreml, onnx, tfjs, tflite

    def rows(converter):
        return [f for f in formats.FORMATS if f.converter == converter]

    assert set(tflite.QUANTIZATIONS) == {f.quantization for f in rows(formats.TFLITE_CONVERTER)}
    assert set(tfjs.QUANTIZATIONS) == {f.quantization for f in rows(formats.TFJS_CONVERTER)}
    assert set(onnx.QUANTIZATIONS["onnx"]) == {f.quantization for f in rows(formats.ONNX_CONVERTER)}
    assert set(onnx.QUANTIZATIONS["ort"]) == {f.quantization for f in rows(formats.ORT_CONVERTER)}
    registry = {
        (f.target, f.quantization, f.precision or ("float16" if f.target == "mlpackage" else None))
        for f in rows(formats.COREML_CONVERTER)
    }
    assert set(coreml.VARIANTS) == registry
