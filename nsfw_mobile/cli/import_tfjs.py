"""``nsfw-mobile import-tfjs``: a TF.js model as a .keras file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from .common import ExistingPath


@click.command("import-tfjs", short_help="Turn a TF.js model (layers or graph) into a .keras file.")
@click.argument("model_json", type=ExistingPath())
@click.argument("out", type=click.Path(path_type=Path))
def import_tfjs(model_json, out):
    """Convert a TF.js model (model.json + shards, or their folder) to a .keras file:
    a layers model, or a graph model (a frozen TensorFlow graph; the ops of NSFWJS's
    MobileNetV2Mid are supported, any other is refused by name before anything is
    written). The model contract in its userDefinedMetadata, if any, comes along.

    \b
    Examples:
      nsfw-mobile import-tfjs web_model/model.json model.keras
      nsfw-mobile import-tfjs dist/nsfw_tfjs_uint8 back.keras
      nsfw-mobile import-tfjs mobilenet_v2_mid/model.json mid.keras
    """
    from ..atomic import atomic_path
    from ..metadata import write_keras_contract
    from ..models import load_source

    if out.suffix != ".keras":
        raise UsageError(f"{out}: the output must end in .keras")
    source = load_source(model_json)
    with atomic_path(out) as temporary:
        source.model.save(temporary)
        write_keras_contract(temporary, source.contract)
    click.echo(f"wrote {out} ({source.model.count_params():,} parameters)")


COMMANDS = (import_tfjs,)
