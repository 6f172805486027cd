"""A release folder made by hand for the engine-choice tests: shipped model files and a
manifest that claims what each test needs (latencies, engines)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nsfw_mobile.files import sha256_file

ROOT = Path(__file__).resolve().parents[1]


def fake_release(folder: Path, entries: dict[str, dict]) -> Path:
    """``folder`` with each shipped model file named in ``entries`` and a manifest whose entry
    for it is the file's own fields (name, SHA-256, releasable) updated with ``entries[name]``."""
    folder.mkdir()
    shutil.copy(ROOT / "models" / "labels.txt", folder / "labels.txt")
    files = []
    for name, claimed in entries.items():
        shutil.copy(ROOT / "models" / name, folder / name)
        files.append({"file": name, "format": "", "sha256": sha256_file(folder / name),
                      "releasable": True, **claimed})  # fmt: skip
    manifest = {
        "schema_version": 2,
        "files": files,
        "labels_file": {"file": "labels.txt", "sha256": sha256_file(folder / "labels.txt")},
        "source": {"sha256": "0" * 64},
        "machine": {"cpu": "the release machine"},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder
