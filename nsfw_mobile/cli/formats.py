"""``nsfw-mobile formats``: list the registry's output formats."""

from __future__ import annotations

import click

from ..errors import UsageError
from ..formats import FORMATS, engines_of, markdown_table, tolerance_for
from .common import echo_json, json_option


@click.command("formats", short_help="List the output formats, their files and tolerances.")
@json_option("Print the registry as JSON.")
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the formats table as Markdown (docs/formats.md shows it).",
)
def list_formats(as_json, markdown):
    """List the output formats, their file names and validation tolerances.

    \b
    Examples:
      nsfw-mobile formats
      nsfw-mobile formats --json
      nsfw-mobile formats --markdown
    """
    from dataclasses import asdict

    if as_json and markdown:
        raise UsageError("--json and --markdown: choose one output")

    if as_json:
        echo_json(
            [
                {
                    "key": f.key,
                    "target": f.target,
                    "quantization": f.quantization,
                    "precision": f.precision,
                    "filename": f.filename,
                    "summary": f.summary,
                    "options": list(f.options),
                    "tolerance": {**asdict(f.tolerance), "rule": f.tolerance.describe()},
                    "engines": {
                        key: {
                            **asdict(tolerance_for(f, key)),
                            "rule": tolerance_for(f, key).describe(),
                        }
                        for key in engines_of(f)
                    },
                }
                for f in FORMATS
            ]
        )
        return
    if markdown:
        click.echo(markdown_table())
        return
    for f in FORMATS:
        click.echo(f"{f.key:<18} {f.filename:<24} {f.tolerance.describe():<32} {f.summary}")


COMMANDS = (list_formats,)
