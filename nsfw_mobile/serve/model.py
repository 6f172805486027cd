"""What the server serves: one open runner and the facts its answers carry.

``open_model`` is the one place where ``serve`` (embedded or on a Ray replica) turns
what the user named into an open runner. It follows ``predict --model`` today (a
model file, a release folder's fastest validated file on this machine, a zoo
model's name, or by default the float32 TFLite file the package ships); when the
toolkit's one model resolver lands, this function becomes a call to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import zoo
from ..errors import UsageError
from ..metadata import ModelContract
from ..runtime.base import Runner


@dataclass
class ServedModel:
    runner: Runner
    name: str
    """The contract's name: the model's name in answers and in ``/v2/models/{name}``."""
    file: str
    format: str
    engine: str
    sha256: str

    @property
    def contract(self) -> ModelContract:
        return self.runner.contract

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.runner.labels)

    def info(self) -> dict:
        """The model's name, file, format, engine, SHA-256 and contract, as answers carry them."""
        contract = dataclasses.asdict(self.contract)
        contract["labels"] = list(contract["labels"])
        contract["nsfw_labels"] = list(contract["nsfw_labels"])
        contract["input_size"] = list(contract["input_size"])
        return {
            "name": self.name,
            "file": self.file,
            "format": self.format,
            "engine": self.engine,
            "sha256": self.sha256,
            "contract": contract,
        }

    def close(self) -> None:
        self.runner.close()


def open_model(
    given: str | Path | None = None,
    *,
    classes: int | None = None,
    unsafe: bool = False,
    on_choice: Callable[[str], None] | None = None,
) -> ServedModel:
    """Open what ``--model`` names, as ``predict`` does (see the module doc).

    ``classes=5`` keeps NSFWJS's five classes (Drawing, Hentai, Neutral, Porn, Sexy):
    a zoo model (or the default, by its name) run as its Keras reference before the
    toolkit merges them to three; a model file answers with its own labels, so
    ``classes`` must then match them. ``on_choice`` hears which file of a release
    folder was chosen.
    """
    from ..files import sha256_file
    from ..resolve import RUN, resolve_model

    if classes not in (None, 3, 5):
        raise UsageError(f"classes {classes}: choose 3 or 5")
    if classes == 5:
        return _five_classes(zoo.DEFAULT.key if given is None else given)
    ref = resolve_model(given, use=RUN, unsafe=unsafe)
    if on_choice is not None and ref.kind in ("release", "zoo"):
        on_choice(f"using {ref.why}")
    runner = ref.open_runner()
    try:
        if classes == 3 and len(runner.labels) != 3:
            raise UsageError(
                f"--classes 3: {Path(ref.label).name} has {len(runner.labels)} labels "
                f"({', '.join(runner.labels)}); a model file answers with its own labels"
            )
        named = ref.path is None
        return ServedModel(
            runner=runner,
            name=runner.contract.name,
            file="" if named else str(ref.path),
            format=ref.file_type.key,
            engine=ref.engine or "keras",
            sha256=ref.zoo_model.sha256 if named else sha256_file(ref.path),
        )
    except BaseException:
        runner.close()
        raise


def _five_classes(given) -> ServedModel:
    """A zoo model with NSFWJS's five classes, as its Keras reference (needs TensorFlow)."""
    from ..resolve import is_name

    if not is_name(given):
        raise UsageError(
            f"--classes 5 takes a zoo model's name (see `nsfw-mobile models`), run with "
            f"NSFWJS's five classes; {given} is a file, which answers with its own labels: "
            "drop --classes"
        )
    from ..models import SourceModel, pretrained
    from ..runtime.keras_runner import KerasRunner
    from ..zoo import lookup

    named = lookup(str(given))
    source = SourceModel(
        pretrained(classes=5, name=named.key),
        named.contract(5),
        named.contract_name,
        f"pretrained:{named.contract_name}:5",
        named.sha256,
    )
    return ServedModel(
        runner=KerasRunner(source),
        name=named.contract_name,
        file="",
        format="keras",
        engine="keras",
        sha256=named.sha256,
    )
