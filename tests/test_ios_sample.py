"""ios_sample/: checks that run on Linux (building and running the app needs macOS and Xcode).

- every Swift file parses (tree-sitter-swift);
- the Swift code's contract with the model matches the committed models/NSFW.mlmodel;
- the Xcode project references only files that exist and compiles every app Swift file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "ios_sample"
APP = SAMPLE / "NSFWSample"
PROJECT = SAMPLE / "NSFWSample.xcodeproj" / "project.pbxproj"
CONTRACT = SAMPLE / "NSFWCore" / "Sources" / "NSFWCore" / "ModelContract.swift"
SWIFT_FILES = sorted(SAMPLE.rglob("*.swift"))


@pytest.fixture(scope="module")
def parser():
    tree_sitter = pytest.importorskip("tree_sitter")
    tree_sitter_swift = pytest.importorskip("tree_sitter_swift")
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))


def syntax_errors(parser, source: bytes) -> list[str]:
    errors = []

    def walk(node):
        if node.type == "ERROR" or node.is_missing:
            row, column = node.start_point
            errors.append(f"line {row + 1}, column {column + 1}: {node.text[:40]!r}")
        for child in node.children:
            walk(child)

    walk(parser.parse(source).root_node)
    return errors


def test_the_parser_does_catch_syntax_errors(parser):
    assert syntax_errors(parser, b"struct A { func f( { }")
    assert not syntax_errors(parser, b"struct A { func f() {} }")


@pytest.mark.parametrize("path", SWIFT_FILES, ids=lambda p: str(p.relative_to(SAMPLE)))
def test_swift_file_parses(parser, path):
    assert syntax_errors(parser, path.read_bytes()) == []


# ------------------------------------------------------------------ model contract


def contract_literals(parser) -> dict[str, object]:
    """ModelContract's `static let NAME = "..."` and `["...", ...]` values, from the syntax tree."""
    tree = parser.parse(CONTRACT.read_bytes())
    values: dict[str, object] = {}

    def strings(node) -> list[str]:
        found = []
        if node.type == "line_string_literal":
            parts = [c.text.decode() for c in node.children if c.type == "line_str_text"]
            found.append("".join(parts))
            return found
        for child in node.children:
            found.extend(strings(child))
        return found

    def walk(node):
        if node.type == "property_declaration":
            name_node = node.child_by_field_name("name")
            value_node = node.child_by_field_name("value")
            if name_node is not None and value_node is not None:
                name = name_node.text.decode()
                literals = strings(value_node)
                values[name] = literals if value_node.type == "array_literal" else literals[0]
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return values


def test_swift_contract_matches_the_committed_model(parser):
    from nsfw_mobile.runtime.coreml_spec import class_labels, load_spec

    contract = contract_literals(parser)
    assert set(contract) >= {"inputName", "labelOutput", "probabilitiesOutput", "nsfwLabelsKey"}
    spec = load_spec(ROOT / "models" / "NSFW.mlmodel")
    inputs = spec.description.input
    image_inputs = [f.name for f in inputs if f.type.WhichOneof("Type") == "imageType"]
    assert image_inputs == [contract["inputName"]]
    assert spec.description.predictedFeatureName == contract["labelOutput"]
    assert spec.description.predictedProbabilitiesName == contract["probabilitiesOutput"]
    # The app reads the NSFW labels from this metadata entry, as a JSON array of class labels.
    user = spec.description.metadata.userDefined
    nsfw = json.loads(user[contract["nsfwLabelsKey"]])
    assert nsfw == ["Porn", "Sexy"] and set(nsfw) <= set(class_labels(spec))


def test_the_app_hard_codes_no_class_names():
    """Labels and NSFW labels come from the model's metadata, so any model's classes work."""
    for path in SWIFT_FILES:
        if "Tests" in path.parts:
            continue
        code = re.sub(r"///.*|//.*", "", path.read_text())
        for name in ("Neutral", "Porn", "Sexy", "Hentai", "Drawing"):
            assert f'"{name}"' not in code, f"{path.name} hard-codes the class {name}"


def test_app_uses_the_contract_and_the_toolkit_preprocessing():
    source = (APP / "NSFWClassifier.swift").read_text()
    assert "inputImageFeatureName = ModelContract.inputName" in source
    assert "ModelContract.labelOutput" in source and "ModelContract.probabilitiesOutput" in source
    # The toolkit squashes the whole image to the input size, no crop: Vision's .scaleFill.
    assert re.search(r"imageCropAndScaleOption\s*=\s*\.scaleFill", source)


# ------------------------------------------------------------------ Xcode project


def parse_pbxproj(text: str):
    """A small parser for Xcode's old-style (OpenStep) property lists."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"^//.*$", "", text, flags=re.M)
    tokens = re.findall(r'"(?:\\.|[^"\\])*"|[{}();=,]|[^\s{}();=,"]+', text)
    position = 0

    def value():
        nonlocal position
        token = tokens[position]
        position += 1
        if token == "{":
            result = {}
            while tokens[position] != "}":
                key = value()
                assert tokens[position] == "=", tokens[position - 3 : position + 3]
                position += 1
                result[key] = value()
                assert tokens[position] == ";"
                position += 1
            position += 1
            return result
        if token == "(":
            result = []
            while tokens[position] != ")":
                result.append(value())
                if tokens[position] == ",":
                    position += 1
            position += 1
            return result
        if token.startswith('"'):
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        return token

    document = value()
    assert position == len(tokens)
    return document


@pytest.fixture(scope="module")
def project():
    return parse_pbxproj(PROJECT.read_text())


def file_paths(objects) -> dict[str, Path]:
    """Where every PBXFileReference points on disk (None for build products)."""
    parents = {}
    for key, item in objects.items():
        if item["isa"] == "PBXGroup":
            for child in item.get("children", []):
                parents[child] = key

    def resolve(key) -> Path | None:
        item = objects[key]
        tree = item.get("sourceTree")
        own = Path(item.get("path", ""))
        if tree == "SOURCE_ROOT":
            return SAMPLE / own
        if tree == "BUILT_PRODUCTS_DIR":
            return None
        if tree == "<group>":
            parent = parents.get(key)
            base = resolve(parent) if parent else SAMPLE
            return None if base is None else base / own
        raise AssertionError(f"unexpected sourceTree {tree!r} for {item.get('path')}")

    return {key: resolve(key) for key, item in objects.items() if item["isa"] == "PBXFileReference"}


def test_project_references_only_existing_files(project):
    objects = project["objects"]
    paths = file_paths(objects)
    assert paths, "no file references parsed"
    for key, path in paths.items():
        if path is not None:
            assert path.exists(), f"{objects[key].get('path')} -> {path} does not exist"
    model = [p for p in paths.values() if p is not None and p.name == "NSFW.mlmodel"]
    assert [p.resolve() for p in model] == [(ROOT / "models" / "NSFW.mlmodel").resolve()]


def test_every_app_swift_file_is_compiled(project):
    objects = project["objects"]
    paths = file_paths(objects)
    (target,) = [o for o in objects.values() if o["isa"] == "PBXNativeTarget"]
    phases = [objects[p] for p in target["buildPhases"]]
    (sources,) = [phase for phase in phases if phase["isa"] == "PBXSourcesBuildPhase"]
    compiled = {paths[objects[b]["fileRef"]].resolve() for b in sources["files"]}
    for swift in sorted(APP.glob("*.swift")):
        assert swift.resolve() in compiled, f"{swift.name} is not in the app target's Sources"
    assert (ROOT / "models" / "NSFW.mlmodel").resolve() in compiled


def test_local_package_is_referenced(project):
    objects = project["objects"]
    packages = [o for o in objects.values() if o["isa"] == "XCLocalSwiftPackageReference"]
    assert [(SAMPLE / p["relativePath"] / "Package.swift").is_file() for p in packages] == [True]
    settings = [o["buildSettings"] for o in objects.values() if o["isa"] == "XCBuildConfiguration"]
    assert all(s.get("IPHONEOS_DEPLOYMENT_TARGET") == "16.0" for s in settings)
    assert any("NSCameraUsageDescription" in key for s in settings for key in s)
