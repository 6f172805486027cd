"""The service's OpenAPI 3.1 document, written out from the routes' contracts."""

from __future__ import annotations

from ..version import __version__

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error", "code"],
}
MULTIPART = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary"},
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
    },
}
JSON_IMAGES = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "image": {"type": "string", "contentEncoding": "base64"},
                "name": {"type": "string"},
            },  # fmt: skip
            "required": ["image"],
        },
        {
            "type": "object",
            "properties": {
                "images": {
                    "type": "array",
                    "items": {
                        "oneOf": [
                            {"type": "string", "contentEncoding": "base64"},
                            {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "data": {"type": "string"},
                                },
                            },
                        ]
                    },
                }
            },  # fmt: skip
            "required": ["images"],
        },
    ]
}


def _errors(*statuses: int) -> dict:
    body = {"application/json": {"schema": ERROR}}
    return {str(s): {"description": "refused", "content": body} for s in statuses}


def _operation(summary: str, request: dict | None, answer: dict, *errors: int) -> dict:
    operation = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": answer}}},
            **_errors(*errors),
        },  # fmt: skip
    }
    if request is not None:
        operation["requestBody"] = {"required": True, "content": request}
    return operation


def document(model, settings) -> dict:
    labels = {label.lower(): {"type": "number"} for label in model.labels}
    nsfwjs = {"type": "object", "properties": labels}
    record = {
        "type": "object",
        "description": "A record as `nsfw-mobile predict --json` prints it",
        "properties": {
            "path": {"type": "string"},
            "label": {"type": "string"},
            "probabilities": {"type": "object"},
            "nsfw_score": {"type": ["number", "null"]},
            "flagged": {"type": "boolean"},
            "error": {"type": "string"},
            "kind": {"type": "string"},
        },
    }
    multipart = {"multipart/form-data": {"schema": MULTIPART}}
    image_bodies = {
        **multipart,
        "application/json": {"schema": JSON_IMAGES},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }
    refusals = (400, 401, 408, 413, 415, 422, 503, 504)
    name = model.name
    paths = {
        "/classify": {"post": _operation(
            "nsfwjs-api: one image (multipart field `image`)", multipart, nsfwjs, *refusals)},
        "/classify-many": {"post": _operation(
            "nsfwjs-api: several images (multipart field `images`)", multipart,
            {"type": "array", "items": nsfwjs}, *refusals)},
        "/v1/classify": {"post": _operation(
            "predict --json's records for one or many images", image_bodies,
            {"type": "object", "properties": {"model": {"type": "object"},
             "threshold": {"type": ["number", "null"]},
             "results": {"type": "array", "items": record}}}, *refusals)},
        "/v1/classify-video": {"post": _operation(
            "predict's video record (raw body or multipart field `video`; query: every, "
            "keyframes, name)",
            {"video/*": {"schema": {"type": "string", "format": "binary"}},
             "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
             **multipart}, {"type": "object"}, *refusals)},
        "/v1/model": {"get": _operation("The model's facts and contract", None,
                                        {"type": "object"}, 401)},
        "/v2/health/live": {"get": _operation("Open Inference Protocol: live", None,
                                              {"type": "object"})},
        "/v2/health/ready": {"get": _operation("Open Inference Protocol: ready", None,
                                               {"type": "object"}, 503)},
        f"/v2/models/{name}": {"get": _operation("Open Inference Protocol: model metadata",
                                                 None, {"type": "object"}, 401, 404)},
        f"/v2/models/{name}/ready": {"get": _operation(
            "Open Inference Protocol: model ready", None, {"type": "object"}, 401, 404)},
        f"/v2/models/{name}/infer": {"post": _operation(
            "Open Inference Protocol: infer (BYTES input `image` of encoded images; JSON with "
            "base64 elements, or Triton's binary tensor data extension)",
            {"application/json": {"schema": {"type": "object"}},
             "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            {"type": "object"}, *refusals, 404)},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "OK", "content": {"text/plain": {}}}}}},
    }  # fmt: skip
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "nsfw-mobile serve",
            "version": __version__,
            "description": f"{model.name} ({', '.join(model.labels)}): {model.engine}",
        },
        "paths": paths,
    }
    if settings.token is not None:
        document["components"] = {"securitySchemes": {"bearer": {"type": "http",
                                                                 "scheme": "bearer"}}}  # fmt: skip
        document["security"] = [{"bearer": []}]
    return document
