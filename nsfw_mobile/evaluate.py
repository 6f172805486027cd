"""Evaluate any model the runners open on a labelled class-per-folder dataset.

Reports accuracy, per-class precision / recall / F1, the confusion matrix, and
the NSFW-versus-safe view users act on: with the model contract's nsfw_score
(the sum of its NSFW labels' probabilities: P(Porn) + P(Sexy) for the
pretrained model, Hentai too for five classes), ROC and precision-recall
curves, their areas, and the thresholds that keep false positives on safe
images at 1%, 5% and 10%, with the NSFW recall at each. Images of every NSFW
label are the positives.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .data import list_split, split_roots
from .errors import UsageError
from .images import load_images
from .resolve import RUN, ModelRef, resolve_model

FALSE_POSITIVE_TARGETS = (0.01, 0.05, 0.10)


@dataclass
class ThresholdRow:
    max_false_positive_rate: float
    threshold: float
    false_positive_rate: float
    nsfw_recall: float


@dataclass
class EvaluationReport:
    model: str
    data: str
    images: int
    unreadable: list[str]
    labels: list[str]
    accuracy: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    """rows: true class, columns: predicted class"""
    roc_auc: float | None
    average_precision: float | None
    nsfw_labels: list[str] = field(default_factory=list)
    thresholds: list[ThresholdRow] = field(default_factory=list)
    roc_curve: dict[str, list[float]] = field(default_factory=dict)
    pr_curve: dict[str, list[float]] = field(default_factory=dict)

    predictions: list[dict] = field(default_factory=list, repr=False)
    """Per file: path, true and predicted label, probabilities, nsfw_score (for --predictions)."""

    def to_dict(self) -> dict:
        document = asdict(self)
        document.pop("predictions")
        return document


def _area_under(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area (np.trapezoid needs NumPy 2; the floor is 1.26)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_curve(is_positive: np.ndarray, scores: np.ndarray):
    """False and true positive rates at every distinct threshold (descending), and thresholds."""
    order = np.argsort(-scores, kind="mergesort")
    scores, is_positive = scores[order], is_positive[order].astype(np.float64)
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(is_positive)[distinct]
    false_positives = (distinct + 1) - true_positives
    positives, negatives = is_positive.sum(), len(is_positive) - is_positive.sum()
    tpr = np.r_[0.0, true_positives / max(positives, 1)]
    fpr = np.r_[0.0, false_positives / max(negatives, 1)]
    thresholds = np.r_[np.inf, scores[distinct]]
    return fpr, tpr, thresholds


def precision_recall_curve(is_positive: np.ndarray, scores: np.ndarray):
    fpr, tpr, thresholds = roc_curve(is_positive, scores)
    positives = is_positive.sum()
    negatives = len(is_positive) - positives
    true_positives = tpr * positives
    predicted = true_positives + fpr * negatives
    precision = np.where(predicted > 0, true_positives / np.maximum(predicted, 1e-12), 1.0)
    return precision, tpr, thresholds


def threshold_table(is_positive: np.ndarray, scores: np.ndarray) -> list[ThresholdRow]:
    """For each target false-positive rate on safe images, the lowest threshold that keeps it."""
    negatives = np.sort(scores[~is_positive])[::-1]
    rows = []
    for target in FALSE_POSITIVE_TARGETS:
        allowed = int(np.floor(target * len(negatives)))
        # Flag scores strictly above the threshold: at most `allowed` safe images may exceed it.
        threshold = float(negatives[allowed]) if allowed < len(negatives) else 0.0
        flagged = scores > threshold
        rows.append(
            ThresholdRow(
                max_false_positive_rate=target,
                threshold=threshold,
                false_positive_rate=float(flagged[~is_positive].mean()) if len(negatives) else 0.0,
                nsfw_recall=float(flagged[is_positive].mean()) if is_positive.any() else 0.0,
            )
        )
    return rows


def evaluate(
    model_path: ModelRef | str | Path | None,
    data_dir: str | Path,
    *,
    workers: int | None = None,
    allow_unsafe: bool = False,
) -> EvaluationReport:
    """Run the model (as ``predict --model`` names it: ``resolve.resolve_model``, use RUN)
    on DATA_DIR's held-out folder (test/ or val/, as ``train`` finds it), else on DATA_DIR
    itself."""
    ref = (
        model_path
        if isinstance(model_path, ModelRef)
        else resolve_model(model_path, use=RUN, unsafe=allow_unsafe)
    )
    with ref.open_runner() as runner:
        return _evaluate(runner, model_path, data_dir, workers)


def _evaluate(runner, model_path, data_dir, workers) -> EvaluationReport:
    _, held_out = split_roots(data_dir)
    split_root = held_out or Path(data_dir)
    split = list_split(split_root, runner.labels)
    label_of = {str(path): label for path, label in zip(split.paths, split.labels)}
    batch = load_images(split.paths, runner.input_size, workers=workers)
    if not len(batch.paths):
        raise UsageError(f"{split_root}: no readable images")
    truth = np.asarray([label_of[str(path)] for path in batch.paths])
    probabilities = runner.predict(batch.pixels)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((len(runner.labels),) * 2, np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    report = EvaluationReport(
        model=getattr(runner, "name", str(model_path)),
        data=str(split_root),
        images=len(truth),
        unreadable=[str(e) for e in batch.errors],
        labels=list(runner.labels),
        accuracy=float((predicted == truth).mean()),
        per_class=_per_class(confusion, runner.labels),
        confusion=confusion.tolist(),
        roc_auc=None,
        average_precision=None,
        nsfw_labels=list(runner.contract.nsfw_labels),
    )
    scores = runner.contract.nsfw_score(probabilities)
    _nsfw_view(report, np.isin(truth, runner.contract.nsfw_indices), scores)
    report.predictions = [
        {
            "path": str(path),
            "true_label": runner.labels[int(t)],
            "predicted_label": runner.labels[int(p)],
            **{f"p_{name}": float(v) for name, v in zip(runner.labels, row)},
            "nsfw_score": None if scores is None else float(scores[i]),
        }
        for i, (path, t, p, row) in enumerate(zip(batch.paths, truth, predicted, probabilities))
    ]
    return report


def _per_class(confusion: np.ndarray, labels) -> dict[str, dict[str, float]]:
    rows = {}
    for index, name in enumerate(labels):
        tp = confusion[index, index]
        precision = tp / max(confusion[:, index].sum(), 1)
        recall = tp / max(confusion[index].sum(), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        rows[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[index].sum()),
        }
    return rows


def _nsfw_view(report: EvaluationReport, is_positive: np.ndarray, scores) -> None:
    """ROC, PR and thresholds of the nsfw_score, when there are NSFW and safe images."""
    if scores is None or not is_positive.any() or is_positive.all():
        return
    fpr, tpr, _ = roc_curve(is_positive, scores)
    precision, recall, _ = precision_recall_curve(is_positive, scores)
    report.roc_auc = _area_under(fpr, tpr)
    report.average_precision = float(np.sum(np.diff(recall) * precision[1:]))
    report.thresholds = threshold_table(is_positive, scores)
    report.roc_curve = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    report.pr_curve = {"precision": precision.tolist(), "recall": recall.tolist()}


def write_predictions(report: EvaluationReport, path: str | Path) -> Path:
    """One CSV row per file: path, true label, predicted label, probabilities, nsfw_score."""
    path = Path(path)
    columns = ["path", "true_label", "predicted_label", *(f"p_{n}" for n in report.labels)]
    columns.append("nsfw_score")
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in report.predictions:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def render_markdown(report: EvaluationReport) -> str:
    lines = [
        "# Evaluation report",
        "",
        f"Model `{report.model}` on {report.images} images of `{report.data}`.",
        "",
        f"**Accuracy: {report.accuracy:.2%}**",
        "",
        "| class | precision | recall | F1 | images |",
        "|---|---|---|---|---|",
    ]
    for name, row in report.per_class.items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
            f"| {row['support']} |"
        )
    lines += [
        "",
        "Confusion matrix (rows: true class, columns: predicted):",
        "",
        "| | " + " | ".join(report.labels) + " |",
        "|---" * (len(report.labels) + 1) + "|",
    ]
    for name, row in zip(report.labels, report.confusion):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    if report.roc_auc is not None:
        lines += [
            "",
            f"## NSFW versus safe (nsfw_score = sum of P({', '.join(report.nsfw_labels)}))",
            "",
            f"ROC AUC {report.roc_auc:.4f}, average precision {report.average_precision:.4f}.",
            "",
            "| false positives on safe images at most | threshold | measured false positives "
            "| NSFW recall |",
            "|---|---|---|---|",
        ]
        for row in report.thresholds:
            lines.append(
                f"| {row.max_false_positive_rate:.0%} | {row.threshold:.4f} | "
                f"{row.false_positive_rate:.2%} | {row.nsfw_recall:.2%} |"
            )
    if report.unreadable:
        lines += ["", f"{len(report.unreadable)} unreadable files were skipped:", ""]
        lines += [f"- {line}" for line in report.unreadable]
    return "\n".join(lines) + "\n"


def render_table(report: EvaluationReport) -> str:
    text = render_markdown(report)
    return text.replace("# Evaluation report\n\n", "")


def write_reports(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """report.md, report.json and the PNG plots: confusion.png, roc.png, pr.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in (
        ("report.md", render_markdown(report)),
        ("report.json", json.dumps(report.to_dict(), indent=2)),
    ):
        with atomic_path(out_dir / name) as temporary:
            temporary.write_text(content)
        written.append(out_dir / name)

    def save(figure, name):
        with atomic_path(out_dir / name) as temporary:
            figure.savefig(temporary, format="png", dpi=100)
        plt.close(figure)
        written.append(out_dir / name)

    figure, axis = plt.subplots(figsize=(4.5, 4))
    matrix = np.asarray(report.confusion)
    axis.imshow(matrix, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, str(value), ha="center", va="center")
    axis.set_xticks(range(len(report.labels)), report.labels)
    axis.set_yticks(range(len(report.labels)), report.labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"accuracy {report.accuracy:.1%}")
    figure.tight_layout()
    save(figure, "confusion.png")
    if report.roc_auc is not None:
        figure, axis = plt.subplots(figsize=(4.5, 4))
        axis.plot(report.roc_curve["fpr"], report.roc_curve["tpr"])
        axis.plot([0, 1], [0, 1], linestyle=":")
        axis.set_xlabel("false positive rate (safe images flagged)")
        axis.set_ylabel("NSFW recall")
        axis.set_title(f"ROC, AUC {report.roc_auc:.3f}")
        figure.tight_layout()
        save(figure, "roc.png")
        figure, axis = plt.subplots(figsize=(4.5, 4))
        axis.plot(report.pr_curve["recall"], report.pr_curve["precision"])
        axis.set_xlabel("NSFW recall")
        axis.set_ylabel("precision")
        axis.set_title(f"precision-recall, AP {report.average_precision:.3f}")
        figure.tight_layout()
        save(figure, "pr.png")
    return written
