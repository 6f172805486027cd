"""Docs that cannot rot: the README and docs/ are checked against the code and run.

- Every ```bash block of the README and docs/ is run, in order per page, in a folder that
  holds the repository's files and sample inputs, and must exit 0 (or the code an
  ``<!-- exit: N -->`` comment right before it names). A block preceded by
  ``<!-- not-run: REASON -->`` is not run; other fences (text, python, yaml...) are not
  shell, and sh/shell/console fences are refused so that no shell block escapes the rule.
- Generated parts (``<!-- generated: NAME -->``) equal what ``docs/figures.py`` makes of the
  committed files; any other figure with a unit of time, size or speed sits in a section
  that gives the date and the command that measured it.
- The README stays short, its test command is the one CI runs, every command has a page.
- The GitHub Actions example (docs/examples/release.yml) runs, step by step, here.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import figures  # noqa: E402  (docs/figures.py)

from nsfw_mobile.cli import main  # noqa: E402

FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[^\s`]*)")
NOT_RUN = re.compile(r"^<!-- not-run: (?P<reason>.*\S) -->$")
SAME_AS = re.compile(r"^<!-- same-as: (?P<page>\S+) -->$")
EXIT = re.compile(r"^<!-- exit: (?P<code>\d+) -->$")
NOT_MEASURED = re.compile(r"<!-- not-measured: .*\S -->")
SHELL = "bash"
REFUSED_FENCES = {"sh", "shell", "console", "zsh", "shell-session"}
BLOCK_TIMEOUT = 600


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    not_run: str | None = None
    exit_code: int = 0
    same_as: str | None = None
    """A page (relative to the repository) where the same block runs: this one does not."""

    @property
    def runs(self) -> bool:
        return self.lang == SHELL and self.not_run is None and self.same_as is None

    @property
    def where(self) -> str:
        page = self.page
        with contextlib.suppress(ValueError):
            page = page.relative_to(ROOT)
        return f"{page}:{self.line}"


def pages() -> list[Path]:
    return figures.markdown_files()


def blocks_of(text: str, page: Path = Path("page.md")) -> list[Block]:
    """Fenced blocks with the directives on the lines right before them."""
    lines = text.splitlines()
    found, index = [], 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        fence, start = match["fence"], index
        end = start + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        block = Block(page, start + 1, match["lang"].lower(), "\n".join(lines[start + 1 : end]))
        before = start - 1
        while before >= 0 and lines[before].strip().startswith("<!--"):
            comment = lines[before].strip()
            if m := NOT_RUN.match(comment):
                block.not_run = m["reason"]
            elif m := SAME_AS.match(comment):
                block.same_as = m["page"]
            elif m := EXIT.match(comment):
                block.exit_code = int(m["code"])
            before -= 1
        found.append(block)
        index = end + 1
    return found


def fence_problems(blocks: list[Block]) -> list[str]:
    problems = []
    for b in blocks:
        if not b.lang:
            problems.append(f"{b.where}: a fence without a language (bash, text, python...)")
        elif b.lang in REFUSED_FENCES:
            problems.append(f"{b.where}: ```{b.lang}: write ```bash (run by this test) instead")
        if b.lang != SHELL and (b.not_run is not None or b.exit_code or b.same_as):
            problems.append(f"{b.where}: not-run/same-as/exit comments apply to ```bash only")
        if b.same_as is not None:
            target = ROOT / b.same_as
            twins = blocks_of(target.read_text(), target) if target.is_file() else []
            if not any(t.runs and t.code == b.code and t.exit_code == b.exit_code for t in twins):
                problems.append(f"{b.where}: {b.same_as} runs no block with the same code")
    return problems


# ------------------------------------------------------------------ figures

UNIT = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?"
    r"(?:ms|s|min|minutes|seconds|h|hours|images/s|MB|GB|KB|MiB|GiB)(?![\w/])"
    r"|(?<![\w.])\d+(?:\.\d+)?x (?:realtime|faster|slower)"
)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
COMMAND = re.compile(r"`(?:nsfw-mobile|python|pytest|/usr/bin/time|du|NSFW_MOBILE_\w+=)[^`]*`")


def _prose(text: str) -> str:
    """The text a reader takes for claims: no code, no generated parts, no comments."""
    text = figures.BLOCK.sub("", text)
    text = re.sub(
        r"^([ \t]*)(`{3,}|~{3,}).*?^\1\2[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE
    )
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def sections(text: str) -> list[str]:
    """The page cut at its headings (outside code blocks)."""
    parts, current, fence = [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if match:
            fence = None if fence and line.strip().startswith(fence) else (fence or match["fence"])
        if line.startswith("#") and fence is None and current:
            parts.append("\n".join(current))
            current = []
        current.append(line)
    parts.append("\n".join(current))
    return parts


def unsourced_figures(text: str) -> list[str]:
    """Figures with a unit of time, size or speed in a section that gives neither the date
    and command that measured them nor a reason they are not measurements."""
    problems = []
    for section in sections(text):
        figures_found = UNIT.findall(_prose(section))
        if not figures_found or NOT_MEASURED.search(section):
            continue
        if DATE.search(section) and (COMMAND.search(section) or "```bash" in section):
            continue
        heading = section.splitlines()[0]
        problems.append(f"{heading!r}: {', '.join(figures_found[:4])}")
    return problems


# ------------------------------------------------------------------ static checks


def test_every_fence_has_a_language_and_shell_blocks_are_bash():
    problems = []
    for page in pages():
        blocks = blocks_of(page.read_text(), page)
        problems += fence_problems(blocks)
        problems += [f"{b.where}: not-run needs a reason" for b in blocks if b.not_run == ""]
    assert problems == []


def test_generated_parts_equal_what_the_committed_files_make():
    stale = [str(p.relative_to(ROOT)) for p in figures.stale_files()]
    assert stale == [], f"run `python docs/figures.py` to regenerate: {stale}"


def test_readme_figure_table_is_generated_from_the_committed_release():
    readme = (ROOT / "README.md").read_text()
    table = figures.release_table()
    assert f"<!-- generated: release-table -->\n{table}\n<!-- end generated -->" in readme
    manifest = figures._manifest()
    for entry in manifest["files"]:  # the table follows the manifest, file by file
        assert f"`{entry['file']}`" in table and entry["format"] in table


def test_every_other_figure_carries_its_date_and_command():
    problems = [
        f"{page.relative_to(ROOT)}: {problem}"
        for page in pages()
        for problem in unsourced_figures(page.read_text())
    ]
    assert problems == []


def test_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    (contributing,) = [b for b in blocks_of(readme) if 'pip install -e ".[dev]"' in b.code]
    commands = [line for line in contributing.code.splitlines() if line.strip()]
    assert commands == ['pip install -e ".[dev]"', "pytest"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-1] == "pytest" and commands[0] in ci
    assert any(line.startswith("mkdocs build --strict") for line in ci[: ci.index("pytest")])


def test_readme_links_point_at_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", readme)
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []


def test_every_command_has_a_page_with_its_reference_and_a_nav_entry():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def nav_pages(entries):
        for entry in entries:
            for value in entry.values() if isinstance(entry, dict) else [entry]:
                yield from nav_pages(value) if isinstance(value, list) else [value]

    listed = set(nav_pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == listed, "every page of docs/ is in the nav of mkdocs.yml, and only those"
    for name in main.commands:
        page = DOCS / "commands" / f"{name}.md"
        assert f"<!-- cli-reference: {name} -->" in page.read_text(), name


# ------------------------------------------------------------------ the checks, both ways


def test_the_block_rules_read_markers_and_refuse_unmarked_shells():
    text = (
        "```bash\necho run\n```\n\n<!-- not-run: needs Xcode -->\n```bash\nopen x\n```\n"
        "<!-- exit: 5 -->\n```bash\nexit 5\n```\n```sh\nls\n```\n```\nplain\n```\n"
        "<!-- same-as: README.md -->\n```bash\n"
        "nsfw-mobile evaluate runs/first/best.keras data/ --out runs/first/eval\n```\n"
        "<!-- same-as: README.md -->\n```bash\nnsfw-mobile predict elsewhere/\n```\n"
    )
    run, skipped, gate, sh, bare, twin, stray = blocks_of(text)
    assert run.runs and not skipped.runs and skipped.not_run == "needs Xcode"
    assert gate.runs and gate.exit_code == 5
    assert not twin.runs and fence_problems([twin]) == []  # the README runs that block
    problems = fence_problems([run, skipped, gate, sh, bare, twin, stray])
    assert len(problems) == 3 and "README.md runs no block with the same code" in problems[-1]


def test_a_stale_generated_part_is_found(monkeypatch):
    text = "<!-- generated: release-table -->\n| old | figures |\n<!-- end generated -->\n"
    assert figures.fill(text) != text  # a hand-edited part is made again
    readme = (ROOT / "README.md").read_text()
    assert figures.fill(readme) == readme
    manifest = figures._manifest()
    manifest["files"][0]["size_bytes"] += 5_000_000  # models/ released again
    monkeypatch.setattr(figures, "_manifest", lambda: manifest)
    assert figures.fill(readme) != readme


def test_the_figure_rule_wants_a_date_and_a_command():
    bare = "# Speed\n\nIt classifies 290 images/s and starts in 0.36 s.\n"
    assert len(unsourced_figures(bare)) == 1
    dated = bare + "\nMeasured 2026-11-30 with `nsfw-mobile predict photos/`.\n"
    assert unsourced_figures(dated) == []
    setting = "# Limits\n\n<!-- not-measured: a timeout -->\nInstalls stop after 180 s.\n"
    assert unsourced_figures(setting) == []
    generated = "# T\n\n<!-- generated: release-time -->\n4 min 2 s\n<!-- end generated -->\n"
    assert unsourced_figures(generated) == []


def test_a_block_that_fails_is_reported_with_its_place(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\ntrue\n```\n\n```bash\nexit 3\n```\n")
    with pytest.raises(AssertionError, match=r"page.md:5: exit 3, expected 0"):
        run_page(page, tmp_path, os.environ.copy())


# ------------------------------------------------------------------ running the blocks

SAMPLES = ROOT / "nsfw_mobile" / "samples"
LINKED = ("nsfw_mobile", "web_sample", "ios_sample", "benchmarks", "docs", "fuzz", "tests")
CLASSES = ("neutral", "porn", "sexy")


def _write_synthetic(folder: Path, count: int, seed: int, by_class: bool) -> None:
    from conftest import TINY_SIZE, synthetic_batch
    from PIL import Image

    images, labels = synthetic_batch(count, TINY_SIZE, seed=seed)
    for index, (image, label) in enumerate(zip(images, labels)):
        where = folder / CLASSES[label] if by_class else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(where / f"{seed}_{index:02d}.png")


def _write_clips(folder: Path) -> None:
    from clips import write_clip
    from PIL import Image

    frames = [
        np.asarray(Image.open(SAMPLES / name).convert("RGB").resize((128, 96)))
        for name in ("coffee.jpg", "flower.jpg", "rocket.jpg", "astronaut.jpg")
    ]
    (folder / "clips" / "trips").mkdir(parents=True)
    write_clip(folder / "upload.mp4", frames, fps=1, keyframe_every=2)
    write_clip(folder / "clips" / "holiday.mp4", frames[::-1], fps=1, keyframe_every=2)
    write_clip(folder / "clips" / "trips" / "holiday.mp4", frames, fps=2, keyframe_every=2)


@pytest.fixture(scope="module")
def sandbox_template(tmp_path_factory, tiny_model_path) -> Path:
    """What a reader of the docs has at hand: the repository's files, and inputs under the
    names the docs use (photos/, photo.jpg, uploads/, clips/, upload.mp4, data/,
    calibration/, runs/first/best.keras)."""
    root = tmp_path_factory.mktemp("docs-sandbox")
    for name in LINKED:
        (root / name).symlink_to(ROOT / name)
    (root / "models").symlink_to(ROOT / "models")  # read only: the test fails on a write
    photos = [p for p in sorted(SAMPLES.iterdir()) if p.is_file() and p.suffix != ".md"]
    (root / "photos").mkdir()
    for path in photos:
        shutil.copy(path, root / "photos" / path.name)
    shutil.copy(SAMPLES / "coffee.jpg", root / "photo.jpg")
    (root / "uploads").mkdir()
    for name in ("coffee.jpg", "flower.jpg", "microaneurysms.tif"):  # the last one is flagged
        shutil.copy(SAMPLES / name, root / "uploads" / name)
    _write_clips(root)
    _write_synthetic(root / "data" / "train", 24, seed=11, by_class=True)
    _write_synthetic(root / "data" / "test", 24, seed=12, by_class=True)
    _write_synthetic(root / "calibration", 12, seed=13, by_class=False)
    (root / "runs" / "first").mkdir(parents=True)
    shutil.copy(tiny_model_path, root / "runs" / "first" / "best.keras")
    bin_dir = root.parent / f"{root.name}-bin"
    bin_dir.mkdir()
    shim = bin_dir / "nsfw-mobile"  # the toolkit under test, whatever is installed
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m nsfw_mobile.cli "$@"\n')
    shim.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return root


def block_environment(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["MPLBACKEND"] = "Agg"
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_page(page: Path, cwd: Path, env: dict[str, str]) -> list[str]:
    """Run the page's runnable blocks in order in ``cwd``; fail at the first whose exit
    code is not the one expected, naming its place and showing its output."""
    ran = []
    for block in blocks_of(page.read_text(), page):
        if not block.runs:
            continue
        started, cpu = time.perf_counter(), _children_cpu()
        try:
            done = subprocess.run(
                ["bash", "-e", "-c", block.code],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT} s:\n{block.code}")
        if done.returncode != block.exit_code:
            output = (done.stdout + done.stderr)[-3000:]
            raise AssertionError(
                f"{block.where}: exit {done.returncode}, expected {block.exit_code}\n"
                f"{block.code}\n--- output (end) ---\n{output}"
            )
        wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
        ran.append(f"{block.where}: {wall:.1f} s, {cpu:.1f} s CPU")
    return ran


def _repository_state() -> str:
    """What git sees changed in the folders the sandbox links to (not run outside git)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "models", *LINKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return done.stdout if done.returncode == 0 else ""


RUNNABLE_PAGES = [p for p in pages() if any(b.runs for b in blocks_of(p.read_text(), p))]


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", RUNNABLE_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE_PAGES]
)
def test_shell_blocks_run(page, sandbox_template, tmp_path):
    cwd = tmp_path / "reader"
    shutil.copytree(sandbox_template, cwd, symlinks=True)
    env = block_environment(sandbox_template.parent / f"{sandbox_template.name}-bin")
    before = _repository_state()
    ran = run_page(page, cwd, env)
    print("\n".join(ran))  # each block's time, for `pytest -s`
    assert ran
    assert _repository_state() == before, "a block wrote into the repository"


# ------------------------------------------------------------------ the CI workflow example

WORKFLOW = DOCS / "examples" / "release.yml"


def workflow_steps() -> tuple[dict, list[dict]]:
    import yaml

    document = yaml.safe_load(WORKFLOW.read_text())
    (job,) = document["jobs"].values()
    return job.get("env", {}), job["steps"]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: env[m[1]], value)


def run_workflow(cwd: Path, env: dict[str, str], job_env: dict) -> list[tuple[str, int, str]]:
    """The job's steps in order, as a runner would: ``run`` steps with bash -e -o pipefail
    (GitHub's default shell), stopping at the first failure; steps that cannot run here are
    stood in for: checkout and setup-* (this checkout, this Python and Node), ``pip install``
    from PyPI (the toolkit under test is installed), upload-artifact (its path must exist
    and hold the release). ``if: failure()`` steps run only after a failure."""
    env = {**env, **{k: str(v) for k, v in job_env.items()}}
    _, steps = workflow_steps()
    record, failed = [], False
    for step in steps:
        name = step.get("name") or step.get("uses") or step["run"].splitlines()[0]
        condition = str(step.get("if", ""))
        if failed != ("failure()" in condition):
            continue
        uses = step.get("uses", "")
        if uses.startswith(("actions/checkout", "actions/setup-")):
            record.append((name, 0, "stood in for"))
        elif uses.startswith("actions/upload-artifact"):
            path = cwd / _expand(step["with"]["path"], env)
            present = path.is_dir() and (path / "manifest.json").is_file()
            optional = step["with"].get("if-no-files-found") == "ignore"
            record.append((name, 0 if present or optional else 1, str(path)))
            failed = failed or not (present or optional)
        elif "run" in step and step["run"].strip().startswith("pip install"):
            record.append((name, 0, "installed already"))
        else:
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=BLOCK_TIMEOUT,
            )
            record.append((name, done.returncode, done.stdout + done.stderr))
            failed = failed or done.returncode != 0
    return record


def test_the_workflow_example_is_complete():
    job_env, steps = workflow_steps()
    uses = [s.get("uses", "") for s in steps]
    assert uses[0].startswith("actions/checkout")
    assert {"MODEL", "FORMATS", "OUT"} <= set(job_env)
    runs = " ".join(s.get("run", "") for s in steps)
    assert "pip install" in runs and "nsfw-mobile release " in runs and "--check" in runs
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert [str(s.get("if", "")) for s in uploads] == ["", "failure()"]


@pytest.mark.slow
def test_the_workflow_example_runs_and_gates_on_exit_codes(sandbox_template, tmp_path):
    env = block_environment(sandbox_template.parent / f"{sandbox_template.name}-bin")
    model = "runs/first/best.keras"  # a small model: the steps run as they would on the default
    cwd = tmp_path / "checkout"
    shutil.copytree(sandbox_template, cwd, symlinks=True)
    small = {"MODEL": model, "FORMATS": "tflite-float32", "OUT": "release"}
    record = run_workflow(cwd, env, small)
    assert [code for _, code, _ in record] == [0] * len(record), record
    assert [name for name, _, _ in record][-1] == "Keep the release"
    assert (cwd / "release" / "manifest.json").is_file()
    assert "every file passed validation" in record[-3][2]

    # A format that does not exist: the release step's gate stops the job (exit 2).
    cwd = tmp_path / "typo"
    shutil.copytree(sandbox_template, cwd, symlinks=True)
    record = run_workflow(cwd, env, {**small, "FORMATS": "tflite-float64"})
    failing = [(name, code, out) for name, code, out in record if code]
    assert failing[0][:2] == ("Convert, validate and benchmark", 2), record
    assert "::error::nsfw-mobile release failed with exit code 2" in failing[0][2]

    # A file changed after the release: the check step fails (exit 4) and the folder is kept.
    cwd = tmp_path / "tampered"
    shutil.copytree(tmp_path / "checkout", cwd, symlinks=True)
    tflite = cwd / "release" / "nsfw_float32.tflite"
    data = bytearray(tflite.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tflite.write_bytes(bytes(data))
    _, steps = workflow_steps()
    check = next(s for s in steps if "--check" in s.get("run", ""))
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", check["run"]],
        cwd=cwd,
        env={**env, **small},
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    assert "nsfw_float32.tflite" in done.stdout + done.stderr
