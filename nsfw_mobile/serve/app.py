"""The ASGI application: routes, limits, errors and metrics around one ServedModel.

Routes (what each answers is in docs/guides/serve.md):

- ``POST /classify``, ``POST /classify-many``: nsfwjs-api's shape (multipart field
  ``image``; ``images`` for many, as arnidan/nsfw-api reads them), an object of the
  model's labels, lowercased, to probabilities;
- ``POST /v1/classify``: multipart, a raw image body or JSON with base64, one or many
  images, answering ``predict --json``'s records and the model's facts;
  ``POST /v1/classify-video``: ``predict``'s video record; ``GET /v1/model``;
- the Open Inference Protocol v2 (health, model metadata, ``infer`` with a BYTES input
  of encoded images, JSON or Triton's binary tensor data extension);
- ``GET /metrics`` (Prometheus) and ``GET /openapi.json``.

Every refusal is a JSON object ``{"error": message, "code": stable code}`` with a 4xx
(or 503 when full, 504 past the request's time); no traceback ever reaches a client.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import os
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..predict import Prediction
from ..version import __version__
from ..video import is_container
from .metrics import Metrics
from .model import ServedModel
from .scheduler import Overloaded, Scheduler
from .settings import Settings

VIDEO_ROUTE = "/v1/classify-video"
OPEN_ROUTES = frozenset({"/v2/health/live", "/v2/health/ready"})
"""Health checks answer without the bearer token (load balancers, orchestrators)."""
IMAGE_TYPES = ("multipart/form-data", "image/*", "application/octet-stream", "application/json")
TRITON_HEADER = "inference-header-content-length"


class Refused(Exception):
    """A request the service turns down: its status, stable code and message."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


CLOSE_AFTER = frozenset({"body_too_large", "slow_client"})
"""Refusals that close the connection: the rest of the body is never read."""


def refusal(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    if code in CLOSE_AFTER:
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


# ------------------------------------------------------------------ the guard


class Guard:
    """Pure ASGI middleware in front of every route: the bearer token (before any body is
    read), the body cap (by Content-Length at once, else while the body streams in), the
    request's deadline for its body (a slow client gets 408) and the metrics."""

    def __init__(self, app, *, settings: Settings, metrics: Metrics, full: Callable[[], bool]):
        self.app, self.settings, self.metrics, self.full = app, settings, metrics, full

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refused = self._check(scope)
            if refused is not None:
                await refused(scope, receive, send_and_note)
            else:
                receive_limited = self._limited(scope, receive, started)
                await self.app(scope, receive_limited, send_and_note)
        finally:
            route = scope.get("route")
            self.metrics.observe(
                getattr(route, "path", "unmatched"),
                scope["method"],
                status["code"],
                time.perf_counter() - started,
            )

    def _check(self, scope) -> Response | None:
        headers = dict(scope["headers"])
        token = self.settings.token
        if token is not None and scope["path"] not in OPEN_ROUTES:
            given = headers.get(b"authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                value.strip(), token.encode()
            ):
                return refusal(
                    401,
                    "unauthorized",
                    "this service needs a bearer token: Authorization: Bearer TOKEN",
                    {"WWW-Authenticate": "Bearer"},
                )
        if scope["method"] == "POST" and _classifies(scope["path"]) and self.full():
            return refusal(  # at once, before the body is read
                503,
                "overloaded",
                "the service is full: retry",
                {"Retry-After": "1", "Connection": "close"},
            )
        length = headers.get(b"content-length")
        if length is not None:
            cap = self._cap(scope)
            try:
                size = int(length)
            except ValueError:
                return refusal(400, "bad_content_length", "Content-Length is not a number")
            if size > cap:
                return self._too_large(scope, cap)
        return None

    def _cap(self, scope) -> int:
        if scope["path"] == VIDEO_ROUTE:
            return self.settings.max_video_bytes
        return self.settings.max_body_bytes

    def _too_large(self, scope, cap: int) -> Response:
        return refusal(
            413, "body_too_large", f"the request body is over this route's {cap / 2**20:g} MiB"
        )

    def _limited(self, scope, receive, started: float):
        cap, deadline = self._cap(scope), started + self.settings.timeout_s
        seen = {"bytes": 0, "done": False}

        async def receive_limited():
            if seen["done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - time.perf_counter())
            except TimeoutError:
                raise Refused(
                    408,
                    "slow_client",
                    f"the request body did not arrive within {self.settings.timeout_s:g} s",
                ) from None
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > cap:
                    raise Refused(
                        413,
                        "body_too_large",
                        f"the request body is over this route's {cap / 2**20:g} MiB",
                    )
                seen["done"] = not message.get("more_body", False)
            return message

        return receive_limited


def _classifies(path: str) -> bool:
    """Routes whose images go through the scheduler's queue."""
    return path in ("/classify", "/classify-many", "/v1/classify") or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


# ------------------------------------------------------------------ reading images


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _need_type(request: Request, accepted: tuple[str, ...]) -> str:
    kind = _content_type(request)
    for wanted in accepted:
        if kind == wanted or wanted.endswith("/*") and kind.startswith(wanted[:-1]):
            return kind
    raise Refused(
        415,
        "unsupported_media_type",
        f"Content-Type {kind or '(none)'}: this route takes {', '.join(accepted)}",
    )


async def _uploads(request: Request, fields: tuple[str, ...], settings: Settings) -> list:
    """``(name, bytes)`` of the files in the first of ``fields`` the form has."""
    try:
        async with request.form(
            max_files=settings.max_images + 1, max_fields=settings.max_images + 16
        ) as form:
            for field in fields:
                values = form.getlist(field)
                if values:
                    break
            else:
                raise Refused(
                    400,
                    "missing_image",
                    f"the form has no {' or '.join(repr(f) for f in fields)} file field",
                )
            if len(values) > settings.max_images:
                raise _too_many(len(values), settings)
            items = []
            for index, value in enumerate(values):
                if not isinstance(value, UploadFile):
                    raise Refused(
                        400, "not_a_file", f"form field {field!r} is text, expected a file"
                    )
                items.append((value.filename or f"{field}[{index}]", await value.read()))
            return items
    except HTTPException as exc:  # Starlette's multipart parser: malformed or too many parts
        if "Too many files" in str(exc.detail):
            raise _too_many(settings.max_images + 1, settings) from None
        raise Refused(400, "bad_multipart", f"malformed multipart body: {exc.detail}") from None


def _too_many(count: int, settings: Settings) -> Refused:
    return Refused(
        413,
        "too_many_images",
        f"{count} images in one request; {settings.max_images} at most",
    )


def _b64(text, where: str) -> bytes:
    if not isinstance(text, str):
        raise Refused(422, "bad_json_shape", f"{where}: expected a base64 string")
    if text.startswith("data:") and "," in text:  # a data URI
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, "invalid_base64", f"{where}: not valid base64") from None


def _json_images(document, settings: Settings) -> list[tuple[str, bytes]]:
    """``{"image": B64}``, ``{"image": B64, "name": NAME}`` or ``{"images": [B64 or
    {"name": NAME, "data": B64}, ...]}``."""
    shape = (
        'expected {"image": BASE64} or {"images": [BASE64 or {"name": NAME, "data": BASE64}, ...]}'
    )
    if not isinstance(document, dict) or ("image" in document) == ("images" in document):
        raise Refused(422, "bad_json_shape", shape)
    if "image" in document:
        name = document.get("name", "image")
        if not isinstance(name, str):
            raise Refused(422, "bad_json_shape", "name: expected a string")
        return [(name, _b64(document["image"], "image"))]
    entries = document["images"]
    if not isinstance(entries, list) or not entries:
        raise Refused(422, "bad_json_shape", shape)
    if len(entries) > settings.max_images:
        raise _too_many(len(entries), settings)
    items = []
    for index, entry in enumerate(entries):
        where = f"images[{index}]"
        if isinstance(entry, dict):
            name = entry.get("name", where)
            if not isinstance(name, str) or set(entry) - {"name", "data"}:
                raise Refused(422, "bad_json_shape", f"{where}: {shape}")
            items.append((name, _b64(entry.get("data"), f"{where}.data")))
        else:
            items.append((where, _b64(entry, where)))
    return items


async def _images(request: Request, settings: Settings, fields=("image", "images")) -> list:
    kind = _need_type(request, IMAGE_TYPES)
    if kind == "multipart/form-data":
        items = await _uploads(request, fields, settings)
    elif kind == "application/json":
        body = await request.body()
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Refused(400, "invalid_json", "the body is not valid JSON") from None
        items = _json_images(document, settings)
    else:
        name = request.query_params.get("name", "image")
        items = [(name, await request.body())]
    for name, data in items:
        if not data:
            raise Refused(400, "empty_body", f"{name}: no bytes (an empty image)")
        if is_container(data[:12]):
            raise Refused(
                415,
                "video_not_image",
                f"{name} is a video: send it to POST {VIDEO_ROUTE}",
            )
    return items


# ------------------------------------------------------------------ the app


class Service:
    """The routes' shared state: the model, its scheduler, the settings and the metrics."""

    def __init__(self, model: ServedModel, settings: Settings):
        self.model, self.settings = model, settings
        self.metrics = Metrics(model.info())
        self.scheduler = Scheduler(
            model.runner,
            workers=settings.workers,
            max_batch=settings.max_batch,
            batch_wait_ms=settings.batch_wait_ms,
            max_queue=settings.max_queue,
            max_pixels=settings.max_pixels,
            on_batch=self.metrics.batch_size.observe,
        )
        self.metrics.queue_depth.set_function(lambda: self.scheduler.depth)
        self.video_slot = asyncio.Semaphore(1)
        self.ready = False

    async def classify(self, items) -> list[Prediction]:
        try:
            return await self.scheduler.classify(items, self.settings.timeout_s)
        except Overloaded as exc:
            raise Refused(
                503, "overloaded", f"the service is full ({exc}): retry", {"Retry-After": "1"}
            ) from None
        except TimeoutError:
            raise Refused(
                504,
                "timeout",
                f"not classified within the request's {self.settings.timeout_s:g} s",
            ) from None

    # nsfwjs-api -----------------------------------------------------------------

    def _nsfwjs(self, prediction: Prediction) -> dict:
        if prediction.error is not None:
            raise Refused(
                422, prediction.kind or "corrupt", f"{prediction.path}: {prediction.error}"
            )
        ranked = sorted(prediction.probabilities.items(), key=lambda item: -item[1])
        return {label.lower(): p for label, p in ranked}

    async def classify_one(self, request: Request) -> Response:
        """nsfwjs-api: one image in the multipart field `image`."""
        _need_type(request, ("multipart/form-data",))
        items = await _uploads(request, ("image",), self.settings)
        if len(items) > 1:
            raise Refused(
                400, "one_image", f"{len(items)} images: POST /classify-many takes several"
            )
        (prediction,) = await self.classify(items)
        return JSONResponse(self._nsfwjs(prediction))

    async def classify_many(self, request: Request) -> Response:
        """nsfwjs-api: images in the multipart field `images`; a list in their order."""
        _need_type(request, ("multipart/form-data",))
        items = await _uploads(request, ("images", "image"), self.settings)
        return JSONResponse([self._nsfwjs(p) for p in await self.classify(items)])

    # the toolkit's own ----------------------------------------------------------

    async def v1_classify(self, request: Request) -> Response:
        """predict --json's records for one or many images."""
        items = await _images(request, self.settings)
        predictions = await self.classify(items)
        threshold = self.settings.threshold
        return JSONResponse(
            {
                "model": self.model.info(),
                "threshold": threshold,
                "results": [p.record(threshold) for p in predictions],
            }
        )

    async def v1_model(self, request: Request) -> Response:
        return JSONResponse({**self.model.info(), "threshold": self.settings.threshold})

    async def v1_classify_video(self, request: Request) -> Response:
        """predict's video record for one clip (raw body or multipart field `video`)."""
        kind = _need_type(request, ("multipart/form-data", "video/*", "application/octet-stream"))
        try:
            every = float(request.query_params.get("every", "1"))
        except ValueError:
            raise Refused(400, "bad_parameter", "every: expected seconds, such as 0.5") from None
        if not 0.05 <= every <= 3600:
            raise Refused(400, "bad_parameter", "every: choose 0.05 to 3600 seconds")
        keyframes = request.query_params.get("keyframes", "false").lower() in ("1", "true")
        if kind == "multipart/form-data":
            (name, data), *more = await _uploads(request, ("video",), self.settings)
            if more:
                raise Refused(400, "one_video", "one video per request")
        else:
            name, data = request.query_params.get("name", "video"), await request.body()
        if not data:
            raise Refused(400, "empty_body", f"{name}: no bytes (an empty video)")
        if self.video_slot.locked():
            raise Refused(
                503, "overloaded", "a video is being classified: retry", {"Retry-After": "5"}
            )
        async with self.video_slot:
            document = await asyncio.wait_for(
                asyncio.to_thread(self._video, name, data, every, keyframes),
                self.settings.timeout_s * 10,
            )
        return JSONResponse(document)

    def _video(self, name: str, data: bytes, every: float, keyframes: bool) -> dict:
        from ..video import SegmentRule, VideoError, classify_video

        threshold = 0.5 if self.settings.threshold is None else self.settings.threshold
        suffix = os.path.splitext(name)[1].lower() or ".mp4"
        with tempfile.TemporaryDirectory(prefix="nsfw-serve-") as folder:
            path = os.path.join(folder, "upload" + suffix)
            with open(path, "wb") as handle:
                handle.write(data)
            try:
                duration = _duration_s(path)
                if duration is not None and duration > self.settings.max_video_s:
                    raise Refused(
                        413,
                        "video_too_long",
                        f"{name}: {duration:.1f} s, over {self.settings.max_video_s:g} s",
                    )
                with self.scheduler.runner_lock:
                    result = classify_video(
                        self.model.runner,
                        path,
                        every=every,
                        keyframes=keyframes,
                        rule=SegmentRule(threshold=threshold),
                    )
            except VideoError as exc:
                raise Refused(422, exc.kind, f"{name}: {exc.reason}") from None
        document = result.to_dict()
        document["path"] = name
        return document

    # Open Inference Protocol v2 ---------------------------------------------------

    def _v2_model(self, request: Request) -> None:
        name = request.path_params["name"]
        if name != self.model.name:
            raise Refused(
                404, "model_not_found", f"no model {name!r}: this server serves {self.model.name!r}"
            )

    async def v2_server(self, request: Request) -> Response:
        return JSONResponse(
            {"name": "nsfw-mobile", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def v2_model_ready(self, request: Request) -> Response:
        self._v2_model(request)
        return JSONResponse(
            {"name": self.model.name, "ready": self.ready},
            status_code=200 if self.ready else 503,
        )

    async def v2_metadata(self, request: Request) -> Response:
        self._v2_model(request)
        classes = len(self.model.labels)
        contract = self.model.info()
        return JSONResponse(
            {
                "name": self.model.name,
                "versions": ["1"],
                "platform": f"nsfw-mobile_{self.model.format}",
                "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
                "outputs": [
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
                    {"name": "nsfw_score", "datatype": "FP32", "shape": [-1]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                ],
                "parameters": {
                    "labels": list(self.model.labels),
                    "nsfw_labels": list(self.model.contract.nsfw_labels),
                    "input": "encoded images (JPEG, PNG, WebP, ...), one per BYTES element",
                    "model": contract,
                },
            }
        )

    async def v2_infer(self, request: Request) -> Response:
        self._v2_model(request)
        body = await request.body()
        header_size = request.headers.get(TRITON_HEADER)
        header, binary = _split_v2(body, header_size)
        images = _v2_images(header, binary, self.settings)
        predictions = await self.classify([(f"image[{i}]", b) for i, b in enumerate(images)])
        for index, prediction in enumerate(predictions):
            if prediction.error is not None:
                raise Refused(
                    422, prediction.kind or "corrupt", f"image[{index}]: {prediction.error}"
                )
        return _v2_answer(header, predictions, self.model)

    # metrics and OpenAPI ----------------------------------------------------------

    async def metrics_route(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def openapi(self, request: Request) -> Response:
        from .openapi import document

        return JSONResponse(document(self.model, self.settings))

    async def index(self, request: Request) -> Response:
        return JSONResponse(
            {
                "service": "nsfw-mobile serve",
                "version": __version__,
                "model": self.model.name,
                "labels": list(self.model.labels),
                "openapi": "/openapi.json",
            }
        )


def _duration_s(path: str) -> float | None:
    """The container's duration, read before any frame is decoded (None: unknown; the
    decoder then reports what it finds)."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            for stream in container.streams.video:
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
    except Exception:  # noqa: BLE001 (any decoder failure: classify_video names it)
        return None
    return None


def _split_v2(body: bytes, header_size: str | None) -> tuple[dict, bytes]:
    """The JSON inference header and the binary tensor data after it (Triton's extension)."""
    if header_size is not None:
        try:
            size = int(header_size)
        except ValueError:
            message = "Inference-Header-Content-Length: not a number"
            raise Refused(400, "bad_v2_request", message) from None
        if not 0 < size <= len(body):
            raise Refused(400, "bad_v2_request", "Inference-Header-Content-Length: out of range")
        text, binary = body[:size], body[size:]
    else:
        text, binary = body, b""
    if not text:
        raise Refused(400, "empty_body", "no inference request")
    try:
        header = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "invalid_json", "the inference request is not valid JSON") from None
    if not isinstance(header, dict):
        raise Refused(422, "bad_v2_request", "the inference request must be a JSON object")
    return header, binary


def _bytes_elements(raw: bytes) -> list[bytes]:
    """A BYTES tensor in binary form: each element a 4-byte little-endian length, then it."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise Refused(400, "bad_v2_request", "BYTES tensor data: a length prefix is cut")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise Refused(400, "bad_v2_request", "BYTES tensor data: an element is cut")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _v2_images(header: dict, binary: bytes, settings: Settings) -> list[bytes]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise Refused(422, "bad_v2_request", "expected one input: the BYTES tensor 'image'")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise Refused(422, "bad_v2_request", "input datatype must be BYTES (encoded images)")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise Refused(422, "bad_v2_request", "input shape: expected a list of sizes")
    count = int(np.prod(shape)) if shape else 1
    if count > settings.max_images:
        raise _too_many(count, settings)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise Refused(400, "bad_v2_request", "binary_data_size is out of range")
        images = _bytes_elements(binary[:size])
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise Refused(422, "bad_v2_request", "input data: expected a list of base64 strings")
        images = [_b64(item, f"data[{i}]") for i, item in enumerate(_flatten(data))]
    if len(images) != count or count == 0:
        raise Refused(
            422, "bad_v2_request", f"input shape {shape} holds {count} images, data {len(images)}"
        )
    for index, image in enumerate(images):
        if not image:
            raise Refused(400, "empty_body", f"image[{index}]: no bytes")
        if is_container(image[:12]):
            raise Refused(415, "video_not_image", f"image[{index}] is a video")
    return images


def _flatten(data: list) -> list:
    out = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _v2_answer(header: dict, predictions: list[Prediction], model: ServedModel) -> Response:
    labels = model.labels
    probabilities = np.array(
        [[p.probabilities[name] for name in labels] for p in predictions], np.float32
    )
    scores = np.array([p.nsfw_score or 0.0 for p in predictions], np.float32)
    names = [p.label for p in predictions]
    tensors = {
        "probabilities": ("FP32", [len(predictions), len(labels)], probabilities),
        "nsfw_score": ("FP32", [len(predictions)], scores),
        "label": ("BYTES", [len(predictions)], names),
    }
    parameters = header.get("parameters") if isinstance(header.get("parameters"), dict) else {}
    binary_all = bool(parameters.get("binary_data_output", False))
    wanted = header.get("outputs")
    if isinstance(wanted, list) and wanted:
        requested = []
        for entry in wanted:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name not in tensors:
                raise Refused(422, "bad_v2_request", f"no output {name!r}: {', '.join(tensors)}")
            binary = (entry.get("parameters") or {}).get("binary_data", binary_all)
            requested.append((name, bool(binary)))
    else:
        requested = [(name, binary_all) for name in tensors]
    outputs, chunks = [], []
    for name, binary in requested:
        datatype, shape, values = tensors[name]
        entry = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            if datatype == "BYTES":
                raw = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
            else:
                raw = np.ascontiguousarray(values, "<f4").tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = values if datatype == "BYTES" else values.ravel().tolist()
        outputs.append(entry)
    answer = {"model_name": model.name, "model_version": "1", "outputs": outputs}
    if isinstance(header.get("id"), str):
        answer["id"] = header["id"]
    text = json.dumps(answer, separators=(",", ":")).encode()
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


def _guarded(handler: Callable[[Request], Awaitable[Response]]):
    """A route that answers every failure as JSON with a stable code, never a traceback."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as exc:
            return refusal(exc.status, exc.code, exc.message, exc.headers)
        except (TimeoutError, asyncio.TimeoutError):
            return refusal(504, "timeout", "not answered within the request's time")
        except Exception as exc:  # the engine failed: say so, keep serving
            return refusal(500, "internal", f"the model failed: {type(exc).__name__}")

    endpoint.__doc__ = handler.__doc__
    return endpoint


def create_app(model: ServedModel, settings: Settings) -> Starlette:
    service = Service(model, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.scheduler.start()
        service.ready = True
        try:
            yield
        finally:
            service.ready = False
            await asyncio.to_thread(service.scheduler.stop)

    def route(path, handler, methods=("GET",)):
        return Route(path, _guarded(handler), methods=list(methods))

    post = ("POST",)
    routes = [
        route("/", service.index),
        route("/classify", service.classify_one, post),
        route("/classify-many", service.classify_many, post),
        route("/v1/classify", service.v1_classify, post),
        route(VIDEO_ROUTE, service.v1_classify_video, post),
        route("/v1/model", service.v1_model),
        route("/v2", service.v2_server),
        route("/v2/health/live", service.v2_live),
        route("/v2/health/ready", service.v2_ready),
        route("/v2/models/{name}", service.v2_metadata),
        route("/v2/models/{name}/ready", service.v2_model_ready),
        route("/v2/models/{name}/infer", service.v2_infer, post),
        route("/metrics", service.metrics_route),
        route("/openapi.json", service.openapi),
    ]

    async def http_error(request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return refusal(exc.status_code, code, str(exc.detail))

    async def internal(request, exc: Exception):
        return refusal(500, "internal", "internal error")

    middleware = []
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", TRITON_HEADER],
            )
        )
    middleware.append(
        Middleware(
            Guard,
            settings=settings,
            metrics=service.metrics,
            full=lambda: service.scheduler.depth >= settings.max_queue,
        )
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal},
    )
    app.state.service = service
    return app
