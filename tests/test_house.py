"""The house: one registry drives dispatch, layers point one way, the library leaves its
caller's process alone, the command line prints only its own lines and cleans up."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from nsfw_mobile import formats
from nsfw_mobile.cli import EXIT_ERROR, EXIT_USAGE, main
from nsfw_mobile.errors import ModelFileError, UsageError
from nsfw_mobile.models import PRETRAINED_JSON

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nsfw_mobile"


# ------------------------------------------------------------------ layers

REFERENCE = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)+):[\w.]+$")
"""A registry's string reference to code, ``"package.module:attribute"`` (``formats.resolve``)."""


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _entered(target: str, modules: set[str], top: str, importer: str) -> set[str]:
    """Importing ``a.b.c`` from outside ``a.b`` runs ``a.b`` first (its package): an edge
    too (inside it, ``a.b`` is already running). The top package is left out: it is the
    library's facade, above every layer, and imports nothing at its top but the version."""
    parts = target.split(".")
    found = {".".join(parts[:n]) for n in range(2, len(parts) + 1)}
    own = {".".join(importer.split(".")[:n]) for n in range(1, importer.count(".") + 1)}
    return {m for m in found if m in modules and m != top and (m == target or m not in own)}


def _imports(path: Path, modules: set[str], root: Path) -> set[str]:
    """Every module of the package ``path`` enters: imports at the top or inside functions,
    the packages they run first, and registry string references ("module:attribute")."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (
                (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            )
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                targets.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = REFERENCE.match(node.value)
            if match:
                targets.add(match.group(1))
    found = set()
    for target in targets:
        found |= _entered(target, modules, root.name, name)
        if target == root.name:
            found.add(target)
    return found - {name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it enters (see ``_imports``)."""
    files = [f for f in root.rglob("*.py") if "__pycache__" not in f.parts]
    modules = {_module_name(f, root) for f in files}
    return {_module_name(f, root): _imports(f, modules, root) for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as the path
    of one cycle through it: an import circle of any length."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):  # recursion is fine: the package has ~70 modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph, group: set[str]) -> list[str]:
    """A cycle inside ``group``, as module names from the first back to it."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & group):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(group)


LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "core contract",
        (
            "version",
            "errors",
            "labels",
            "files",
            "pause",
            "atomic",
            "quiet",
            "_tf",
            "parallel",
            "machine",
            "node_packages",
            "metadata",
            "images",
            "live_rule",
            "zoo_fetch",
            "zoo",
        ),
    ),
    (
        "format code",
        (
            "tflite_metadata",
            "onnx_file",
            "tfjs",
            "tfjs_graph",
            "onnx_import",
            "models",
            "inspect_model",
            "runtime",
            "runtime.*",
            "export",
            "export.*",
        ),
    ),
    ("registry", ("formats",)),
    ("naming a model", ("manifest", "engine_choice", "resolve")),
    (
        "services",
        (
            "precision",
            "predict",
            "video",
            "video_plot",
            "validate",
            "bench",
            "convert",
            "release",
            "evaluate",
            "data",
            "train",
            "distributed",
            "serve",
            "serve.*",
        ),
    ),
    ("command line and library facade", ("", "cli", "cli.*")),
)
"""The declared order, lowest first: a module imports only from its own layer or below."""


def rank(module: str, top: str = "nsfw_mobile") -> int:
    relative = module.removeprefix(top).removeprefix(".")
    for position, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns):
            return position
    raise AssertionError(f"{module} has no layer in LAYERS: give it one")


def upward_imports(graph) -> list[str]:
    return sorted(
        f"{a} ({LAYERS[rank(a)][0]}) -> {b} ({LAYERS[rank(b)][0]})"
        for a, targets in graph.items()
        for b in targets
        if rank(b) > rank(a)
    )


def test_runtime_never_imports_the_exporters():
    pattern = re.compile(r"from \.\.?export|from \.export|nsfw_mobile\.export")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (PACKAGE / "runtime").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
    graph = import_graph()
    for module in ("nsfw_mobile.validate", "nsfw_mobile.inspect_model", "nsfw_mobile.metadata"):
        assert not any(m.startswith("nsfw_mobile.export.") for m in graph[module]), module


def test_the_package_has_no_import_circle_of_any_length():
    graph = import_graph()
    assert "nsfw_mobile.runtime.coreml_spec" in graph["nsfw_mobile.runtime.coreml_mil"]
    assert "nsfw_mobile.runtime" in graph["nsfw_mobile.resolve"]  # a submodule's package
    assert "nsfw_mobile.runtime.tflite_runner" in graph["nsfw_mobile.formats"]  # by reference
    assert "nsfw_mobile.resolve" in graph["nsfw_mobile.cli.predict"]  # inside a function
    assert cycles(graph) == []


def test_every_module_has_a_layer_and_imports_only_downward():
    graph = import_graph()
    for module in graph:
        rank(module)
    assert upward_imports(graph) == []


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package written under ``root`` from {relative path: source}."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_the_circle_finder_sees_a_planted_three_module_circle(tmp_path):
    """a -> b at the top, b -> c inside a function, c -> a by a registry string: found;
    the same package without the string reference is clean."""
    planted = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from . import b\n",
        "pkg/b.py": "def late():\n    from .c import thing\n    return thing\n",
        "pkg/c.py": 'thing = 1\nRUNNER = "pkg.a:Runner"\n',
        "pkg/sub/__init__.py": "from ..a import b\n",
        "pkg/d.py": "import pkg.sub.e\n",
        "pkg/sub/e.py": "",
    }
    graph = import_graph(_package(tmp_path / "planted", planted) / "pkg")
    assert graph["pkg.d"] == {"pkg.sub", "pkg.sub.e"}  # a submodule runs its package first
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    clean = {**planted, "pkg/c.py": "thing = 1\n"}
    assert cycles(import_graph(_package(tmp_path / "clean", clean) / "pkg")) == []
    two = {**clean, "pkg/sub/e.py": "from .. import d\n"}  # a circle through a package
    assert cycles(import_graph(_package(tmp_path / "two", two) / "pkg")) == [
        ["pkg.d", "pkg.sub.e", "pkg.d"]
    ]


# ------------------------------------------------------------------ registry


def test_file_types_come_from_the_registry(tmp_path):
    assert formats.file_type_of("x/NSFW.mlpackage") is formats.MLPACKAGE
    assert formats.file_type_of("m.TFLITE") is formats.TFLITE
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "model.json").write_text("{}")
    assert formats.file_type_of(tmp_path / "web") is formats.TFJS_LAYERS
    assert formats.file_type_of("model.onnx") is formats.ONNX
    assert formats.file_type_of("model.ORT") is formats.ORT
    with pytest.raises(ModelFileError, match=r"unknown model type '\.pt'.*\.tflite.*\.onnx"):
        formats.file_type_of("model.pt")
    for fmt in formats.FORMATS:
        path = tmp_path / fmt.filename
        if fmt.file_type.folder_marker:  # a TF.js folder is known by the model.json inside
            path.mkdir()
            (path / fmt.file_type.folder_marker).write_text("{}")
        assert formats.file_type_of(path) is fmt.file_type
        assert callable(formats.resolve(fmt.converter))
        assert hasattr(formats.resolve(fmt.file_type.runner), "open")
        assert callable(formats.resolve(fmt.file_type.inspector))


def test_select_never_falls_back_to_a_row():
    assert formats.select("mlpackage").key == "mlpackage"  # float16, the declared default
    assert formats.select("mlpackage", precision="float32").key == "mlpackage-float32"
    assert formats.select("mlpackage", "int8").key == "mlpackage-int8"
    with pytest.raises(UsageError, match="float32 with --quantize int8 is not offered"):
        formats.select("mlpackage", "int8", "float32")
    with pytest.raises(UsageError, match="not available for tflite"):
        formats.select("tflite", "int4")
    with pytest.raises(UsageError, match="--precision applies to --to mlpackage"):
        formats.select("tflite", "none", "float16")


def test_option_rules_live_in_the_registry():
    int8 = formats.by_key("tflite-int8")
    formats.check_options([int8], io_type="int8", calibration="photos/")
    with pytest.raises(UsageError, match="--io applies to full-integer TFLite only"):
        formats.check_options([formats.by_key("mlmodel")], io_type="float32")
    with pytest.raises(UsageError, match="--io int4: choose one of uint8, int8, float32"):
        formats.check_options([int8], io_type="int4")
    with pytest.raises(UsageError, match="takes no io_type"):
        formats.by_key("tflite-float32").convert(None, Path("x.tflite"), io_type="int8")


def test_docs_formats_table_is_the_registry():
    result = CliRunner().invoke(main, ["formats", "--markdown"])
    assert result.exit_code == 0
    assert result.stdout.strip() in (ROOT / "docs" / "formats.md").read_text()


# ------------------------------------------------------------------ side effects


def test_threaded_decoding_leaves_warning_filters_and_pillow_alone(tmp_path, samples):
    from nsfw_mobile.images import load_images

    folder = tmp_path / "many"
    folder.mkdir()
    for copy in range(4):
        for sample in samples:
            shutil.copy(sample, folder / f"{copy}_{sample.name}")
    filters, limit = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    batch = load_images([folder], 64, workers=16)
    assert len(batch.paths) == 4 * len(samples)
    assert warnings.filters == filters
    assert limit == Image.MAX_IMAGE_PIXELS
    CliRunner().invoke(main, ["predict", str(samples[0]), "--model", "models/nsfw_int8.tflite"])
    assert warnings.filters == filters and limit == Image.MAX_IMAGE_PIXELS


def test_large_jpeg_decodes_in_draft_mode_under_pillows_own_limit(tmp_path):
    """A JPEG over Pillow's process-wide limit decodes through draft mode without
    anyone lifting that limit; other formats keep it."""
    from nsfw_mobile.images import decode_image

    path = tmp_path / "big.jpg"
    Image.new("RGB", (12_000, 2_000), (200, 30, 30)).save(path, quality=50)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 10_000_000  # 24 MP is above it, and above twice it
    try:
        pixels = decode_image(path, 32)
        assert pixels.shape == (32, 32, 3) and abs(int(pixels[..., 0].mean()) - 200) < 4
        Image.new("RGB", (12_000, 2_000)).save(tmp_path / "big.png")
        with pytest.raises(Exception, match="decompression bomb"):
            decode_image(tmp_path / "big.png", 32)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


# ------------------------------------------------------------------ quiet output

TOOLKIT_LINE = re.compile(
    r"^(\[\d+/\d+\] \S+: .+ -> .+|    done in .+|    note: .+|using .+|\d+ of \d+ files .+"
    r"|summary: \d+ files: .+ images/s)$"
)


def _cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "nsfw_mobile.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


@pytest.mark.slow
def test_predict_and_convert_print_only_the_toolkits_lines(tiny_model_path, tmp_path, samples):
    predicted = _cli("predict", samples[0], "--model", tiny_model_path)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stderr.startswith("summary: 1 files: 1 ")
    assert all(TOOLKIT_LINE.match(line) for line in predicted.stderr.splitlines())
    converted = _cli(
        "convert", tiny_model_path, "--to", "mlpackage-int8", "--to", "tflite-int8",
        "--out", tmp_path,
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    lines = converted.stderr.splitlines()
    assert lines and all(TOOLKIT_LINE.match(line) for line in lines), converted.stderr
    assert "[2/2] tflite-int8" in converted.stderr
    tflite = _cli("predict", samples[0], "--model", tmp_path / "nsfw_int8.tflite")
    assert tflite.returncode == 0 and len(tflite.stderr.splitlines()) == 1
    assert TOOLKIT_LINE.match(tflite.stderr.strip()), tflite.stderr
    verbose = _cli("predict", samples[0], "--model", tmp_path / "nsfw_int8.tflite", "--verbose")
    assert "XNNPACK" in verbose.stderr  # what the default run hid was really there


def test_import_tfjs_prints_only_the_toolkits_line(tmp_path):
    """Building the Keras model from model.json starts TensorFlow: its logs stay hidden."""
    imported = _cli("import-tfjs", PRETRAINED_JSON, tmp_path / "back.keras")
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr == "" and imported.stdout.startswith("wrote ")


# ------------------------------------------------------------------ the command-line edge


def test_os_error_is_one_line_and_exit_1(tmp_path, samples):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["convert", "--to", "tflite", "--out", str(blocker / "dist")])
    assert result.exit_code == EXIT_ERROR, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output


def test_stale_partial_files_are_ignored_and_cleaned(tmp_path, tiny_artifacts):
    from nsfw_mobile.atomic import atomic_path, temporary_name

    folder = tmp_path / "release"
    folder.mkdir()
    real = tiny_artifacts["tflite-int8"].path
    shutil.copy(real, folder / real.name)
    code = f"from nsfw_mobile.atomic import temporary_name; print(temporary_name({real.name!r}))"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT)  # fmt: skip
    stale = folder / dead.stdout.strip()  # the name a writer that died would have left
    stale.write_bytes(real.read_bytes()[:1000])
    assert formats.model_files_in(folder) == [folder / real.name]
    result = CliRunner().invoke(
        main, ["bench", str(folder), "--runs", "2", "--seconds", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert (
        '"path": "' + str(folder / real.name) in result.stdout and stale.name not in result.stdout
    )
    live = folder / temporary_name("other.tflite")  # this process: not stale
    live.write_bytes(b"")
    with atomic_path(folder / "labels.txt") as temporary:
        temporary.write_text("a\n")
    assert not stale.exists() and live.exists()


def test_predict_skips_hidden_and_partial_files(tmp_path, samples):
    from nsfw_mobile.images import find_images

    (tmp_path / ".hidden").mkdir()
    shutil.copy(samples[0], tmp_path / ".hidden" / "a.jpg")
    shutil.copy(samples[0], tmp_path / ".nsfw-mobile-partial-0-1-2-b.jpg")
    shutil.copy(samples[0], tmp_path / "c.jpg")
    assert find_images([tmp_path]) == [tmp_path / "c.jpg"]


def test_replacing_a_folder_restores_the_old_one_when_the_rename_fails(tmp_path, monkeypatch):
    from nsfw_mobile import atomic

    final = tmp_path / "NSFW.mlpackage"
    final.mkdir()
    (final / "old.bin").write_text("old")
    real_replace, calls = os.replace, []

    def failing_second_rename(source, target):
        calls.append((source, target))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", failing_second_rename)
    with pytest.raises(OSError), atomic.atomic_path(final) as temporary:
        temporary.mkdir()
        (temporary / "new.bin").write_text("new")
    assert (final / "old.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["NSFW.mlpackage"]


def test_a_benchmark_child_that_dies_is_an_error_with_its_stderr(tmp_path):
    bogus = tmp_path / "broken.tflite"
    bogus.write_bytes(b"TFL3" + bytes(200))
    result = CliRunner().invoke(main, ["bench", str(bogus), "--runs", "1", "--seconds", "0"])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "benchmark process died" in result.stderr
    assert "not a loadable TFLite model" in result.stderr
    assert result.exit_code != EXIT_USAGE
