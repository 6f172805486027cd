"""Classify image files on a Ray cluster, with exactly the answers ``predict`` gives.

The pipeline is Ray Data's batch-inference idiom with the toolkit's own parts:

    read_binary_files(paths, include_paths=True)     file bytes, read by Ray's tasks
      -> map_batches(Classifier, compute=ActorPoolStrategy(size=actors), num_cpus=1)
           each actor opens the model once (a single-threaded runner) and decodes
           the bytes with images.decode_image, as predict does, then predict's own
           predict._predictions
      -> write_parquet(out)                          the columns of ``predict --csv``

Nothing of Ray's image reading is used (``read_images`` decodes and resizes its own
way, and the answers would drift from predict's). A file that cannot be decoded is
a row with ``error`` and ``kind``; an actor that dies is replaced and its batch run
again (Ray's actor restarts and task retries), so every input file has exactly one
row. The model travels to the workers as bytes (``ModelFiles``) in the actors'
constructor arguments, through Ray's object store: workers need the toolkit and
Ray installed, not a copy of the model.

Ray is imported inside the functions that need it: it is an extra
(``pip install "nsfw-mobile[ray]"``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImageError, ModelFileError, NsfwMobileError, UsageError
from .formats import TFJS_LAYERS
from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    decode_image,
    unsupported_reason,
    walk_inputs,
)
from .predict import Prediction, _predictions, column_names
from .resolve import RUN, ModelRef, resolve_model

RAY_INSTALL = 'pip install "nsfw-mobile[ray]"'
SKIPPED_KIND = "unsupported_type"
VIDEO_REASON = "a video: videos are not classified on Ray yet (run nsfw-mobile predict on it)"


def require_ray():
    """Import Ray, or say in one line how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise NsfwMobileError(f"running on Ray needs Ray Data: {RAY_INSTALL}") from None
    return ray


def is_uri(path: str | os.PathLike) -> bool:
    """A path for one of Ray's file systems (s3://, gs://, ...) rather than a local one."""
    return "://" in str(path)


# ------------------------------------------------------------------ the model, as bytes


@dataclass(frozen=True)
class ModelFiles:
    """A model file or folder as bytes, to open on machines that do not have it."""

    entry: str | None
    """The file or folder to open, relative to where ``unpack`` writes; None: the zoo model
    ``name``, which each worker resolves on its own side (``resolve.resolve_model``: its
    cached release, else its Keras reference; fetched on each worker on first use)."""
    files: dict[str, bytes] = field(default_factory=dict)
    name: str | None = None

    @classmethod
    def read(cls, model: ModelRef | str | os.PathLike | None) -> ModelFiles:
        """What workers need to resolve ``model`` on their side: the files of the model the
        driver resolved (None: predict's default), or a zoo model's name."""
        ref = model if isinstance(model, ModelRef) else resolve_model(model, use=RUN)
        if ref.path is None:
            return cls(None, name=ref.zoo_model.key)
        path = ref.path
        if path.is_dir():  # a .mlpackage or a TF.js model folder
            members = [p for p in sorted(path.rglob("*")) if p.is_file()]
        elif ref.file_type is TFJS_LAYERS:
            members = [path, *_tfjs_shards(path)]
        else:
            members = [path]
        files = {p.relative_to(path.parent).as_posix(): p.read_bytes() for p in members}
        return cls(path.name, files)

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def unpack(self, folder: Path) -> Path | str:
        """Write the files under ``folder``; what to resolve there (a path, or a zoo name)."""
        if self.entry is None:
            return self.name
        for relative, data in self.files.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return folder / self.entry


def _tfjs_shards(model_json: Path) -> list[Path]:
    """The weight shards a TF.js model.json names (only these travel, not its whole folder)."""
    from .tfjs import read_json

    folder = model_json.parent.resolve()
    shards = []
    for group in read_json(model_json).get("weightsManifest", []):
        for name in group.get("paths", []):
            shard = (folder / name).resolve()
            if not shard.is_relative_to(folder) or not shard.is_file():
                raise ModelFileError(f"{model_json}: weight shard {name!r} is not in its folder")
            shards.append(model_json.parent / name)
    return shards


# ------------------------------------------------------------------ rows


def output_schema(labels: Iterable[str]):
    """The Parquet schema: ``p_<label>`` and nsfw_score are float64; label, probabilities,
    nsfw_score and flagged are null on error rows; error and kind are null on the others."""
    import pyarrow as pa

    labels = list(labels)
    types = [pa.string(), pa.string(), *(pa.float64() for _ in labels), pa.float64(),
             pa.bool_(), pa.string(), pa.string()]  # fmt: skip
    return pa.schema(list(zip(column_names(labels), types)))


def rows_table(predictions: list[Prediction], labels: list[str], threshold: float | None):
    """Predictions as a table of ``output_schema(labels)``."""
    import pyarrow as pa

    columns: dict[str, list] = {name: [] for name in column_names(labels)}
    for prediction in predictions:
        probabilities = prediction.probabilities or {}
        ok = prediction.error is None
        columns["path"].append(prediction.path)
        columns["label"].append(prediction.label)
        for name in labels:
            columns[f"p_{name}"].append(probabilities.get(name))
        columns["nsfw_score"].append(prediction.nsfw_score)
        columns["flagged"].append(prediction.is_flagged(threshold) if ok else None)
        columns["error"].append(prediction.error)
        columns["kind"].append(prediction.kind)
    return pa.Table.from_pydict(columns, schema=output_schema(labels))


def skipped_prediction(path: str | os.PathLike) -> Prediction:
    """A file of a folder that is not classified: a row with kind ``unsupported_type``."""

    path = Path(path)
    reason = VIDEO_REASON if path.suffix.lower() in VIDEO_SUFFIXES else unsupported_reason(path)
    return Prediction(path=str(path), error=reason, kind=SKIPPED_KIND)


# ------------------------------------------------------------------ the actor


class Classifier:
    """The callable class for ``Dataset.map_batches``: a batch of ``{"path", "bytes"}``
    (``read_binary_files(..., include_paths=True)``) in, a table of
    ``output_schema(labels)`` out, one row per file.

    Ray creates one per actor: the model is opened once, single-threaded (the actor
    holds one CPU), and closed when Ray shuts the actor down.
    """

    def __init__(
        self,
        model: ModelFiles,
        *,
        labels: list[str],
        threshold: float | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_unsafe: bool = False,
        path_prefix: str = "",
    ):
        self.threshold, self.max_pixels, self.path_prefix = threshold, max_pixels, path_prefix
        self._folder = Path(tempfile.mkdtemp(prefix="nsfw-mobile-model-"))
        try:
            ref = resolve_model(model.unpack(self._folder), use=RUN, unsafe=allow_unsafe)
            self.runner = ref.open_runner(num_threads=1)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self.labels = list(self.runner.labels)
        if self.labels != list(labels):
            self.close()
            raise ModelFileError(
                f"the model on this worker has labels {self.labels}, the driver's {list(labels)}"
            )

    def __call__(self, batch: dict[str, np.ndarray]):
        results: list[Prediction | None] = []
        paths, pixels = [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            path = self.path_prefix + str(path)
            try:
                pixels.append(decode_image(bytes(data), self.runner.input_size,
                                           max_pixels=self.max_pixels))  # fmt: skip
            except ImageError as exc:
                results.append(Prediction(path=path, error=exc.reason, kind=exc.kind))
                continue
            results.append(None)
            paths.append(path)
        classified = iter(_predictions(self.runner, paths, pixels) if pixels else ())
        predictions = [r if r is not None else next(classified) for r in results]
        return rows_table(predictions, self.labels, self.threshold)

    def close(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None and hasattr(runner, "close"):
            runner.close()
        self.runner = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __del__(self):  # Ray Data deletes the instance when it shuts an actor down
        self.close()


# ------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class Plan:
    """How a run uses the cluster."""

    cluster_cpus: float
    actors: int
    cpus_per_actor: float
    readers: int
    """Read tasks at a time (and write tasks): they reserve no CPU, so this bounds them."""
    batch_size: int
    files: int
    """Files sent to the actors (local inputs; remote folders are listed by Ray)."""
    skipped: int
    inputs: tuple[str, ...]
    """Remote (URI) inputs that Ray lists itself."""

    def describe(self) -> str:
        remote = f" + {len(self.inputs)} remote paths" if self.inputs else ""
        files = f"{self.files} files{remote}"
        return (
            f"plan: {self.actors} actors x {self.cpus_per_actor:g} CPU "
            f"(cluster: {self.cluster_cpus:g} CPUs), single-threaded model per actor, "
            f"batches of {self.batch_size}; {self.readers} read tasks at a time (no CPU "
            f"reserved); {files} to classify, {self.skipped} skipped"
        )


def pool_size(cluster_cpus: float, actors: int | None = None) -> int:
    """The actors to start: one per CPU of the cluster unless given.

    Each actor reserves one CPU, and Ray's read and write tasks reserve none (see
    ``run``), so a pool as large as the cluster never starves the readers: with
    ``num_cpus=1`` readers, a pool of 2 on 2 CPUs left no CPU to schedule a read and
    hung for over 10 minutes (an earlier trial on the development machine, Ray 2.60).
    """
    available = max(1, int(cluster_cpus))
    if actors is None:
        return available
    if actors > available:
        raise UsageError(
            f"--actors {actors}: the cluster has {cluster_cpus:g} CPUs and each actor takes one; "
            f"choose at most {available}"
        )
    return actors


def reader_count(actors: int) -> int:
    """Read tasks at a time: one per four actors, at least one.

    Reading file bytes costs little next to decoding and classifying them, but tasks that
    reserve no CPU are otherwise started without bound, each in a Python process of its
    own (14 worker processes on 2 CPUs, measured, Ray 2.60).
    """
    return max(1, actors // 4)


# ------------------------------------------------------------------ the run


@dataclass
class RunSummary:
    """What was written, counted from the Parquet files themselves."""

    out: str
    rows: int = 0
    by_label: Counter = field(default_factory=Counter)
    flagged: int = 0
    errors: int = 0
    skipped: int = 0


def split_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path], list[str]]:
    """(files to classify, files skipped, remote inputs) as predict walks them.

    Local files and folders are walked by ``images.walk_inputs`` (predict's own
    rules: sorted, hidden entries left out, files named explicitly always decoded,
    other files of folders reported as skipped). Videos are skipped: they are not
    classified on Ray. Remote inputs (URIs) are listed by Ray: only their image files
    are read.
    """

    local = [Path(p) for p in paths if not is_uri(p)]
    remote = [str(p) for p in paths if is_uri(p)]
    if local and remote:
        raise UsageError("local paths and URIs together: Ray reads from one file system per run")
    walked = walk_inputs(local)
    videos = [p for p in walked.images if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in walked.images if p.suffix.lower() not in VIDEO_SUFFIXES]
    return images, sorted(walked.unsupported + videos), remote


def check_out(out: str | os.PathLike) -> None:
    """Refuse an --out that already holds files: results are never mixed or appended."""
    if is_uri(out):
        import pyarrow.fs

        filesystem, root = pyarrow.fs.FileSystem.from_uri(str(out))
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    else:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: a file is in the way; give a folder")
        entries = list(out.iterdir()) if out.is_dir() else []
    if entries:
        raise UsageError(
            f"--out {out} already holds files (a previous run?): results are never mixed; "
            "choose a new folder or remove it"
        )


def run(
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: ModelRef | str | os.PathLike | None = None,
    labels: list[str],
    threshold: float | None = None,
    batch_size: int = 32,
    actors: int | None = None,
    allow_unsafe: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    readers: int | None = None,
    classifier: type[Classifier] | None = None,
    on_plan: Callable[[Plan], None] | None = None,
) -> RunSummary:
    """Classify ``paths`` on the Ray cluster this process is connected to (call
    ``ray.init`` first) and write Parquet files under ``out``, one row per file.

    ``labels``: the model's, as the caller's runner reports them (the columns).
    A local ``out`` appears only when complete (written beside it, then renamed).
    """
    ray = require_ray()
    paths = list(paths)
    check_out(out)
    images, skipped, remote = split_inputs(paths)
    if not images and not skipped and not remote:
        raise UsageError("no image files found in " + ", ".join(map(str, paths)))
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    pool = pool_size(cluster_cpus, actors)
    plan = Plan(cluster_cpus, pool, 1.0, readers or reader_count(pool), batch_size,
                len(images), len(skipped), tuple(remote))  # fmt: skip
    if on_plan is not None:
        on_plan(plan)
    dataset = _dataset(ray, plan, images, skipped, remote, model, classifier or Classifier,
                       labels=labels, threshold=threshold, allow_unsafe=allow_unsafe,
                       max_pixels=max_pixels)  # fmt: skip
    write = {"ray_remote_args": {"num_cpus": 0}, "concurrency": plan.readers}
    if is_uri(out):
        dataset.write_parquet(str(out), **write)
    else:
        from .atomic import atomic_path

        with atomic_path(Path(out).absolute()) as temporary:
            dataset.write_parquet(str(temporary), **write)
    summary = count_rows(out)
    expected = len(images) + len(skipped)
    if not remote and summary.rows != expected:
        raise NsfwMobileError(
            f"{out}: {summary.rows} rows written for {expected} files (a lost or repeated batch)"
        )
    return summary


def _dataset(ray, plan, images, skipped, remote, model, classifier, *, labels, **options):
    """The Ray Dataset of rows: classified files, then skipped ones."""
    parts = []
    sources = [str(p) for p in images] + remote
    if sources:
        read = ray.data.read_binary_files(
            sources,
            include_paths=True,
            num_cpus=0,  # I/O: reserving a CPU per read task would take one from the actors
            concurrency=plan.readers,
            file_extensions=sorted(s[1:] for s in IMAGE_SUFFIXES) if remote else None,
        )
        # Ray reports remote paths without their scheme: the rows give them back
        prefix = remote[0].split("://")[0] + "://" if remote else ""
        parts.append(
            read.map_batches(
                classifier,
                fn_constructor_kwargs={
                    "model": ModelFiles.read(model),
                    "labels": labels,
                    "path_prefix": prefix,
                    **options,
                },
                batch_size=plan.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=plan.actors),
                num_cpus=plan.cpus_per_actor,
                # fault tolerance is Ray Data's default for actor pools: a dead actor is
                # replaced and its batches run again (max_restarts and max_task_retries -1;
                # setting them through map_batches is deprecated since Ray 2.60)
            )
        )
    if skipped:
        table = rows_table([skipped_prediction(p) for p in skipped], labels, None)
        parts.append(ray.data.from_arrow(table))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def count_rows(out: str | os.PathLike) -> RunSummary:
    """Count the rows of a run's Parquet files by label, flagged, error and skipped."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    summary = RunSummary(out=str(out))
    dataset = ds.dataset(str(out), format="parquet")
    for batch in dataset.to_batches(columns=["label", "flagged", "error", "kind"]):
        summary.rows += batch.num_rows
        skipped = pc.equal(batch["kind"], SKIPPED_KIND).fill_null(False)
        summary.skipped += pc.sum(skipped).as_py() or 0
        errors = pc.and_(pc.is_valid(batch["error"]), pc.invert(skipped))
        summary.errors += pc.sum(errors).as_py() or 0
        summary.flagged += pc.sum(batch["flagged"].fill_null(False)).as_py() or 0
        for item in pc.value_counts(batch["label"].drop_null()).to_pylist():
            summary.by_label[item["values"]] += item["counts"]
    return summary
