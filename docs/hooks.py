"""MkDocs hooks: generated parts, the CLI reference of each command, files from outside docs/.

- Generated parts (``<!-- generated: NAME -->``, see ``docs/figures.py``) are made again
  while the site builds, so the site always shows the committed outputs and the code as
  they are (``tests/test_docs.py`` keeps the Markdown files themselves current).
- ``<!-- cli-reference: COMMAND -->`` becomes mkdocs-click's reference of that command
  (usage, description, options: the text of ``--help``) followed by the examples that end
  its ``--help``; ``<!-- cli-reference: all -->`` gives every command.
- Images that live beside the code they belong to (the web sample's screenshot, the
  benchmark chart) are published under ``assets/`` without a second copy in the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path[:0] = [str(ROOT), str(DOCS)]

import figures  # noqa: E402

ASSETS = {
    "assets/screenshot.png": ROOT / "web_sample" / "screenshot.png",
    "assets/camera.png": ROOT / "web_sample" / "camera.png",
    "assets/latency.png": ROOT / "benchmarks" / "latency.png",
    "assets/release.yml": DOCS / "examples" / "release.yml",
}
REFERENCE = "<!-- cli-reference: "


def on_files(files, config):
    for uri, source in ASSETS.items():
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files


def _reference(name: str) -> str:
    from nsfw_mobile.cli import main

    command = main.commands[name]
    module = sys.modules[command.callback.__module__]
    attribute = next(key for key, value in vars(module).items() if value is command)
    directive = "\n".join(
        [
            "::: mkdocs-click",
            f"    :module: {module.__name__}",
            f"    :command: {attribute}",
            f"    :prog_name: nsfw-mobile {name}",
            "    :depth: 2",
            "",
        ]
    )
    examples = (command.epilog or "").replace("\b", "").strip()
    return directive + (
        f"\n**{examples.splitlines()[0]}**\n\n```bash\n"
        + "\n".join(line.strip() for line in examples.splitlines()[1:])
        + "\n```\n"
        if examples
        else ""
    )


def on_page_markdown(markdown, page, config, files):
    markdown = figures.fill(markdown)
    lines = []
    for line in markdown.splitlines():
        if line.startswith(REFERENCE) and line.endswith("-->"):
            name = line[len(REFERENCE) : -3].strip()
            if name == "all":
                from nsfw_mobile.cli import main

                lines += [_reference(n) for n in sorted(main.commands)]
            else:
                lines.append(_reference(name))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
