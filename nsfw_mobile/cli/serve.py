"""``nsfw-mobile serve``: the model as an HTTP moderation service."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

import click

from ..errors import UsageError
from .cluster import ADDRESS, LOCAL
from .common import MODEL, ExistingPath, given

TOKEN_ENV = "NSFW_MOBILE_SERVE_TOKEN"
THRESHOLD_ENV = "NSFW_MOBILE_THRESHOLD"
DEFAULT_PORT = 8080


def _token(token_file: Path | None) -> str | None:
    """The bearer token: from --token-file or the environment, never the command line."""
    from_env = os.environ.get(TOKEN_ENV)
    if token_file is not None and from_env:
        raise UsageError(f"--token-file and ${TOKEN_ENV}: give the token one way")
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise UsageError(f"--token-file {token_file}: the file is empty")
        return token
    return from_env.strip() if from_env else None


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_embedded(app, host: str, port: int, *, timeout_s: float, on_listening) -> None:
    """Serve ``app`` under uvicorn in this process until SIGTERM or SIGINT, then stop
    accepting, finish the requests under way and return (exit code 0)."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn re-raises the signal it caught once it has shut down; a server that
        stopped cleanly on request has nothing more to report, so it returns instead."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    sock = _listening_socket(host, port)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(timeout_s) + 5,
        server_header=False,
    )
    server = GracefulServer(config)
    on_listening(_url(host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@click.command(short_help="Serve a model over HTTP (nsfwjs-api, v1, Open Inference v2).")
@click.argument("model", required=False, default=None, type=MODEL)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port (0: one the system picks; the printed line says which).",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=None,
    help="Lanes (TFLite: one model copy per lane) or decoding threads (engines that take "
    "batches). Default: one per core, at most 8.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    envvar=THRESHOLD_ENV,
    show_envvar=True,
    help="Add `flagged` to /v1 records whose nsfw_score is above this (as predict "
    "--threshold); videos' segments start above it (default 0.5 for videos).",
)
@click.option(
    "--classes",
    type=click.Choice(["3", "5"]),
    default=None,
    help="5: a zoo model (MODEL a zoo name, default pretrained) with NSFWJS's five classes, "
    "as nsfwjs-api answers; runs its Keras reference (needs the full extra). Default: the "
    "model's own labels.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Most images per model call, for engines that take batches.",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="How long a batch waits for more images after its first.",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(0, min_open=True),
    default=20.0,
    show_default=True,
    help="Largest image request body, refused as it streams in.",
)
@click.option(
    "--max-video-mb",
    type=click.FloatRange(0, min_open=True),
    default=200.0,
    show_default=True,
    help="Largest body of /v1/classify-video.",
)
@click.option(
    "--max-video-s",
    type=click.FloatRange(0, min_open=True),
    default=600.0,
    show_default=True,
    help="Longest video /v1/classify-video takes (seconds).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Images waiting or under way at most; more get 503 and Retry-After.",
)
@click.option(
    "--max-images",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Images in one request at most.",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Per request: its body must arrive (else 408) and its images be "
    "classified (else 504) within this.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser clients from this origin (https://app.example.com); repeatable.",
)
@click.option(
    "--token-file",
    type=ExistingPath(dir_okay=False),
    default=None,
    help=f"Require `Authorization: Bearer TOKEN`, TOKEN read from this file (or set "
    f"${TOKEN_ENV}); the health checks stay open.",
)
@click.option(
    "--unsafe",
    is_flag=True,
    help="Allow .keras models with Lambda layers (runs their code; .keras files only).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value=LOCAL,
    default=None,
    metavar="[ADDRESS]",
    help="Serve with Ray Serve: ADDRESS as ray.init takes it ('auto', HOST:6379); alone, a "
    "new local Ray. Needs the serve-ray extra.",
)
@click.option(
    "--replicas",
    type=click.IntRange(1),
    default=None,
    help="With --ray: copies of the app (default 1), spread over the cluster.",
)
@click.pass_context
def serve(
    ctx, model, host, port, workers, threshold, classes, max_batch, batch_wait_ms, max_body_mb,
    max_video_mb, max_video_s, max_queue, max_images, timeout_s, cors_origins, token_file,
    unsafe, ray_address, replicas,
):  # fmt: skip
    """Serve MODEL over HTTP until SIGTERM or Ctrl-C.

    MODEL is anything predict --model takes (a model file, a release folder: its
    fastest validated file here, a zoo name); default: the float32 TFLite file the
    package ships. One line on stdout gives the address once it listens.

    Routes: POST /classify and /classify-many (nsfwjs-api: multipart field
    `image`, `images` for many; the model's labels, lowercased, to
    probabilities); POST /v1/classify (multipart, a raw image body or JSON with
    base64; predict --json's records and the model's facts); POST
    /v1/classify-video (predict's video record); the Open Inference Protocol v2
    under /v2 (tritonclient.http works unchanged); GET /metrics (Prometheus) and
    /openapi.json.

    A full queue answers 503 with Retry-After; bad input answers 4xx JSON with a
    stable `code`. SIGTERM or Ctrl-C stops accepting, finishes the requests under
    way and exits 0 (a server's clean stop, unlike other commands' 143 and 130).

    Then: curl -F image=@photo.jpg http://127.0.0.1:8080/classify. With --ray, the
    same app runs on Ray Serve replicas (--ray auto --replicas 4: the cluster this
    machine belongs to).

    \b
    Examples:
      nsfw-mobile serve
      nsfw-mobile serve models/ --threshold 0.8 --workers 2
      nsfw-mobile serve pretrained --classes 5
    """
    from ..serve.settings import Settings

    if replicas is not None and ray_address is None:
        raise UsageError("--replicas applies with --ray only (one process here: --workers)")
    if ray_address is not None and not ADDRESS.fullmatch(ray_address):
        raise UsageError(
            f"--ray {ray_address}: not a Ray address (auto, ray://HOST:PORT, HOST:PORT); "
            "write --ray local for a new local Ray"
        )
    if given(ctx, "unsafe") and ray_address is not None:
        raise UsageError("--unsafe and --ray: a replica never runs a model's code; drop --unsafe")
    settings = Settings(
        threshold=threshold, workers=workers, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
        max_body_mb=max_body_mb, max_video_mb=max_video_mb, max_video_s=max_video_s,
        max_queue=max_queue, max_images=max_images, timeout_s=timeout_s,
        cors_origins=tuple(cors_origins), token=_token(token_file),
    )  # fmt: skip
    classes = None if classes is None else int(classes)

    def say(line: str) -> None:
        click.echo(line, err=True)

    if ray_address is not None:
        from ..serve.on_ray import serve_on_ray

        return serve_on_ray(
            model, classes=classes, settings=settings, address=ray_address,
            replicas=replicas or 1, host=host, port=port, on_listening=_announce(model),
            log=say,
        )  # fmt: skip
    from ..serve import create_app, open_model

    served = open_model(model, classes=classes, unsafe=unsafe, on_choice=say)
    try:
        app = create_app(served, settings)
        run_embedded(app, host, port, timeout_s=timeout_s, on_listening=_announce(served))
    finally:
        served.close()
    say("stopped")


def _announce(model):
    def announce(url: str) -> None:
        name = getattr(model, "name", None) or str(model or "pretrained")
        engine = getattr(model, "engine", None)
        what = f"{name} ({engine})" if engine else name
        click.echo(f"serving {what} on {url}")
        with contextlib.suppress(OSError, ValueError):
            click.get_text_stream("stdout").flush()

    return announce


COMMANDS = (serve,)
