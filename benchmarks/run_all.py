"""Reproduce benchmarks/RESULTS.md: our TFLite models against the engines a user
would otherwise pick on a server CPU, the compute floor, and end-to-end folder
throughput. One command, after `pip install -e ".[dev,bench]"`:

    python benchmarks/run_all.py [--models models/] [--out benchmarks/]

Every engine is measured in its own process (ONNX Runtime's spinning worker
threads would slow down whatever shares the process). All run the same network,
exported from the same Keras model: LiteRT runs the release's .tflite files and
ONNX Runtime its .onnx files (the toolkit's ONNX export: float32, and static int8
QDQ calibrated on the same sample images as the int8 .tflite), both through the
toolkit's runners on the same uint8 image; OpenVINO, the outside reference, reads
the .tflite files. The toolkit's own OpenVINO runner (``toolkit-openvino-*``, what
``predict --model RELEASE`` may pick) runs the .onnx files, whose int8 is another
quantisation than the .tflite's: both are shown, so any difference between the two
is visible. A release without .onnx files gets them from the toolkit's converter
first. OpenVINO runs "float32" models in bfloat16 on CPUs with AVX-512 BF16 unless
told INFERENCE_PRECISION_HINT=f32, so both are shown (the toolkit's runner: f32).

The compute floor is the core's peak (``peak.py``: a compiled FMA / VNNI kernel,
or lanes x units x clock without a compiler), so every engine's ratio to it is at
least 1. ``--out`` is checked (made, and written to) before anything is measured,
and ``results.json`` is written after every stage: a failure keeps what was
measured before it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ENGINES = [
    "litert-float32",
    "litert-int8",
    "onnxruntime-float32",
    "onnxruntime-int8",
    "openvino-float32-f32",
    "openvino-float32-default",
    "openvino-int8",
    "toolkit-openvino-float32",
    "toolkit-openvino-int8",
    "keras-eager",
    "keras-function",
    "keras-predict",
]
RUNS, WARMUP = 100, 10


def _time(call, runs=RUNS) -> float:
    for _ in range(WARMUP):
        call()
    latencies = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    return float(np.median(latencies) * 1e3)


def _sample_batch(size=224, dtype=np.float32):
    from nsfw_mobile.images import load_images, sample_images

    pixels = load_images(sample_images(), size).pixels
    return pixels if dtype == np.uint8 else pixels.astype(np.float32) / 255


def measure(engine: str, threads: int, models: Path, work: Path) -> float:
    """Median batch-1 latency in ms of one engine, run inside this (child) process."""
    image = _sample_batch()[:1]
    if engine.startswith("litert"):
        from nsfw_mobile.runtime.tflite_runner import TFLiteRunner

        name = "nsfw_float32.tflite" if engine.endswith("float32") else "nsfw_int8.tflite"
        runner = TFLiteRunner(models / name, num_threads=threads)
        pixels = _sample_batch(dtype=np.uint8)[:1]
        return _time(lambda: runner.predict(pixels))
    if engine.startswith("onnxruntime"):
        from nsfw_mobile.runtime.onnx_runner import OnnxRunner

        runner = OnnxRunner(onnx_files(models, work)[engine.split("-")[1]], num_threads=threads)
        pixels = _sample_batch(dtype=np.uint8)[:1]
        return _time(lambda: runner.predict(pixels))
    if engine.startswith("toolkit-openvino"):
        from nsfw_mobile.runtime.openvino_runner import OpenVINORunner

        path = onnx_files(models, work)[engine.rsplit("-", 1)[1]]
        runner = OpenVINORunner(path, num_threads=threads)
        pixels = _sample_batch(dtype=np.uint8)[:1]
        return _time(lambda: runner.predict(pixels))
    if engine.startswith("openvino"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(
            models / ("nsfw_int8.tflite" if engine.endswith("int8") else "nsfw_float32.tflite")
        )
        model.reshape([1, 224, 224, 3])
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if engine.endswith("-f32"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()
        element = compiled.inputs[0].get_element_type().to_dtype()
        feed = _sample_batch(dtype=np.uint8)[:1] if element == np.uint8 else image
        return _time(lambda: request.infer({0: feed}))
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from nsfw_mobile.models import pretrained

    model = pretrained()
    if engine == "keras-eager":
        return _time(lambda: model(image, training=False), runs=30)
    if engine == "keras-function":
        forward = tf.function(lambda x: model(x, training=False))
        return _time(lambda: forward(image))
    return _time(lambda: model.predict(image, verbose=0), runs=30)


def core_peaks() -> dict:
    """The core's peak (peak.py) beside the GEMM libraries' rates; the floor takes the
    highest of them, so no engine can run below it."""
    from peak import peak

    from nsfw_mobile.machine import machine_info

    found = peak(set(machine_info()["isa"]))
    gemm = gemm_peaks()
    return {
        "method": found["method"],
        "float32_gmacs": max(found["float32_gmacs"], gemm["float32_gmacs"]),
        "int8_gmacs": max(found["int8_gmacs"], gemm["int8_gmacs"]),
        "gemm_float32_gmacs": gemm["float32_gmacs"],
        "gemm_int8_gmacs": gemm["int8_gmacs"],
    }


def gemm_peaks() -> dict:
    """Single-thread float32 GEMM (numpy) and u8s8 GEMM (ONNX Runtime MatMulInteger) rates."""
    size = 1024
    a = np.random.default_rng(0).random((size, size), np.float32)
    b = np.random.default_rng(1).random((size, size), np.float32)
    seconds = _time(lambda: a @ b, runs=20) / 1e3
    float_macs = size**3 / seconds
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weight = helper.make_tensor(
        "B",
        TensorProto.INT8,
        (size, size),
        np.random.default_rng(2).integers(-128, 127, size * size).tolist(),
    )
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, (size, size))],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, (size, size))],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(3).integers(0, 255, (size, size)).astype(np.uint8)
    int8_seconds = _time(lambda: session.run(None, {"A": x}), runs=20) / 1e3
    return {"float32_gmacs": float_macs / 1e9, "int8_gmacs": size**3 / int8_seconds / 1e9}


def model_macs() -> int:
    """Multiply-accumulates of one 224x224 image through the pretrained network."""
    import keras

    from nsfw_mobile.models import pretrained

    total = 0
    for layer in pretrained()._flatten_layers(include_self=False):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1]
            per_output = (
                kh
                * kw
                * (
                    1
                    if isinstance(layer, keras.layers.DepthwiseConv2D)
                    else in_channels // layer.groups
                )
            )
            total += height * width * out_channels * per_output
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


ONNX_FORMATS = {"float32": "onnx-float32", "int8": "onnx-int8"}


def onnx_files(models: Path, work: Path) -> dict[str, Path]:
    """The release's ONNX files, else the ones export_onnx made in ``work``."""
    from nsfw_mobile.formats import by_key

    found = {}
    for kind, key in ONNX_FORMATS.items():
        name = by_key(key).filename
        found[kind] = models / name if (models / name).is_file() else work / name
    return found


def export_onnx(models: Path, work: Path) -> None:
    """The toolkit's ONNX export of the pretrained model, for a release made without it."""
    from nsfw_mobile.convert import convert_all
    from nsfw_mobile.formats import by_key
    from nsfw_mobile.models import load_source

    present = onnx_files(models, work)
    missing = [key for kind, key in ONNX_FORMATS.items() if not present[kind].is_file()]
    if missing:
        convert_all(load_source(None), [by_key(key) for key in missing], work)


def end_to_end(models: Path, count: int = 200) -> dict:
    """Folder throughput with the int8 model: a naive loop, `nsfw-mobile predict`, and the
    limit that the measured single-core decode and inference times give."""
    from PIL import Image

    from nsfw_mobile.runtime.tflite_runner import TFLiteRunner

    sys.path.insert(0, str(HERE))
    from predict_throughput import make_photos, measure

    with tempfile.TemporaryDirectory() as tmp:
        paths = make_photos(Path(tmp), count)
        naive_runner = TFLiteRunner(models / "nsfw_int8.tflite", num_threads=1)
        started = time.perf_counter()
        for path in paths:  # decode everything, then resize, then infer: one thread
            image = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR))
            naive_runner.predict(image[None])
        naive = count / (time.perf_counter() - started)
    return {"naive_images_per_second": naive, **measure(str(models / "nsfw_int8.tflite"), count)}


def child(arguments) -> None:
    work, models = Path(arguments.work), Path(arguments.models)
    if arguments.measure == "peaks":
        sys.path.insert(0, str(HERE))
        result = core_peaks()
    elif arguments.measure == "macs":
        result = {"macs": model_macs()}
    elif arguments.measure == "onnx":
        export_onnx(models, work)
        result = {"ok": True}
    elif arguments.measure == "end-to-end":
        result = end_to_end(models)
    else:
        result = {"ms": measure(arguments.measure, arguments.threads, models, work)}
    print("RESULT " + json.dumps(result), flush=True)


def run_child(what: str, threads: int, models: Path, work: Path) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            what,
            "--threads",
            str(threads),
            "--models",
            str(models),
            "--work",
            str(work),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{what} x{threads} failed:\n{output.stderr[-3000:]}")


def chart(latencies: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [e for e in ENGINES if not e.startswith("keras-eager") and e in latencies]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    positions = np.arange(len(engines))
    for offset, threads in ((-0.2, 1), (0.2, 2)):
        values = [latencies[e].get(str(threads), np.nan) for e in engines]
        axis.bar(
            positions + offset, values, 0.4, label=f"{threads} thread{'s' if threads > 1 else ''}"
        )
    axis.set_xticks(positions, engines, rotation=30, ha="right")
    axis.set_yscale("log")
    axis.set_ylabel("ms per image (batch 1, median, log scale)")
    axis.set_title("MobileNetV2 NSFW classifier, 224x224, CPU")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=str(HERE.parent / "models"))
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--measure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work")
    parser.add_argument(
        "--only-video", action="store_true", help="re-measure video throughput only, keeping "
        "the other figures of results.json",
    )  # fmt: skip
    arguments = parser.parse_args()
    if arguments.measure:
        child(arguments)
        return
    from nsfw_mobile.machine import machine_info, versions

    models, out = Path(arguments.models).resolve(), Path(arguments.out)
    check_out(out)
    sys.path.insert(0, str(HERE))
    import video_throughput

    if arguments.only_video:
        results = json.loads((out / "results.json").read_text())
        results["video"] = video_throughput.run(10, str(models / "nsfw_int8.tflite"))
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "RESULTS.md").write_text(render(results))
        print((out / "RESULTS.md").read_text())
        return
    latencies: dict[str, dict[str, float]] = {}
    results = {
        "machine": machine_info(),
        "versions": {**versions(), **peer_versions()},
        "latency_ms": latencies,
        "load_average": {"start": os.getloadavg()[0]},
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(
                "ONNX float32 and int8: the release's, else the toolkit's export", file=sys.stderr
            )
            run_child("onnx", 1, models, work)
            for threads in (1, 2):
                for engine in ENGINES:
                    print(f"measuring {engine} with {threads} thread(s)", file=sys.stderr)
                    latencies.setdefault(engine, {})[str(threads)] = run_child(
                        engine, threads, models, work
                    )["ms"]
                    write_partial(out, results)
            print("the core's peak and the network's size", file=sys.stderr)
            peaks = results["gemm_peaks_gmacs"] = run_child("peaks", 1, models, work)
            macs = results["macs"] = run_child("macs", 1, models, work)["macs"]
            results["floor_ms"] = {
                "float32": macs / (peaks["float32_gmacs"] * 1e9) * 1e3,
                "int8": macs / (peaks["int8_gmacs"] * 1e9) * 1e3,
            }
            write_partial(out, results)
            print("a folder of photos, end to end", file=sys.stderr)
            results["end_to_end"] = run_child("end-to-end", 2, models, work)
            write_partial(out, results)
        print("video", file=sys.stderr)
        results["video"] = video_throughput.run(10, str(models / "nsfw_int8.tflite"))
    except BaseException as exc:
        results["failed"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
        write_partial(out, results)
        print(
            f"stopped: {results['failed'].splitlines()[0]}; what was measured is in "
            f"{out / 'results.json'}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    results["load_average"]["end"] = os.getloadavg()[0]
    (out / "results.json").write_text(json.dumps({**results, "complete": True}, indent=2))
    chart(latencies, out / "latency.png")
    (out / "RESULTS.md").write_text(render(results))
    print((out / "RESULTS.md").read_text())


def check_out(out: Path) -> None:
    """Make ``out`` and write to it before anything is measured; fail at once otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".run_all-write-check"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def write_partial(out: Path, results: dict) -> None:
    """results.json as measured so far (``complete`` false until the last stage)."""
    document = {**results, "complete": False}
    temporary = out / ".results.json.partial"
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(out / "results.json")


def peer_versions() -> dict:
    from importlib import metadata

    found = {}
    for name in ("onnxruntime", "openvino", "tf2onnx", "onnx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def load_note(results: dict) -> list[str]:
    """The 1-minute load average around the run: other processes on the machine slow every
    engine, the 2-thread runs most."""
    load = results.get("load_average")
    if not load:
        return []
    return [
        f"Load average (1 min) at the start and end of the run: {load['start']:.1f} and "
        f"{load['end']:.1f} on {results['machine']['cores']} cores (above the core count, "
        "other processes shared the CPU and the figures are slower than on a quiet machine)."
    ]


def floor_sentence(peaks: dict) -> str:
    if "method" not in peaks:  # results.json of an earlier run: GEMM libraries only
        return (
            f"Measured on one core: float32 GEMM (numpy) {peaks['float32_gmacs']:.1f} G MAC/s, "
            f"u8s8 GEMM (ONNX Runtime MatMulInteger) {peaks['int8_gmacs']:.1f} G MAC/s, "
        )
    return (
        f"The core's peak, {peaks['method']}: float32 {peaks['float32_gmacs']:.1f} G MAC/s, "
        f"int8 {peaks['int8_gmacs']:.1f} G MAC/s (GEMM libraries on the same core: numpy "
        f"float32 {peaks['gemm_float32_gmacs']:.1f}, ONNX Runtime MatMulInteger u8s8 "
        f"{peaks['gemm_int8_gmacs']:.1f}), "
    )


def render(results: dict) -> str:
    import video_throughput

    lat, floor, peaks = results["latency_ms"], results["floor_ms"], results["gemm_peaks_gmacs"]
    kind = {e: ("int8" if "int8" in e else "float32") for e in ENGINES}
    rows = [
        f"| {e} | {lat[e]['1']:.2f} | {lat[e]['2']:.2f} | {lat[e]['1'] / floor[kind[e]]:.1f}x |"
        for e in ENGINES
        if e in lat  # results.json of an earlier run lacks the newer rows
    ]
    machine, e2e = results["machine"], results["end_to_end"]
    int8_speedup_1 = lat["litert-float32"]["1"] / lat["litert-int8"]["1"]
    int8_speedup_2 = lat["litert-float32"]["2"] / lat["litert-int8"]["2"]
    vs_ort = lat["onnxruntime-int8"]["1"] / lat["litert-int8"]["1"]
    vs_openvino = lat["openvino-int8"]["1"] / lat["litert-int8"]["1"]
    toolkit_openvino = lat.get("toolkit-openvino-int8", {}).get("1")
    naive, ours = e2e["naive_images_per_second"], e2e["pipeline_images_per_second"]
    return "\n".join(
        [
            "# Benchmark results",
            "",
            'Produced by `python benchmarks/run_all.py` (after `pip install -e ".[dev,bench]"`); '
            "raw figures in `results.json`, chart in `latency.png`.",
            "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, "
            f"ISA {', '.join(machine['isa'])}.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
            *load_note(results),
            "",
            "## Latency, MobileNetV2 1.0 224 + head, batch 1, median of 100 runs",
            "",
            "| engine | 1 thread ms | 2 threads ms | 1 thread / compute floor |",
            "|---|---|---|---|",
            *rows,
            "",
            f"LiteRT int8 vs float32: {int8_speedup_1:.2f}x faster with 1 thread, "
            f"{int8_speedup_2:.2f}x with 2.",
            f"LiteRT int8 vs ONNX Runtime int8: {vs_ort:.2f}x; "
            f"vs OpenVINO int8: {vs_openvino:.2f}x "
            "(1 thread; above 1 means LiteRT is faster)"
            + (
                f"; the toolkit's OpenVINO runner on nsfw_int8.onnx: {toolkit_openvino:.2f} ms, "
                f"{toolkit_openvino / lat['litert-int8']['1']:.2f}x LiteRT int8."
                if toolkit_openvino
                else "."
            ),
            "",
            "## Compute floor",
            "",
            f"The network is {results['macs'] / 1e6:.1f} M multiply-accumulates per image. "
            + floor_sentence(peaks)
            + f"so the floor is {floor['float32']:.2f} ms (float32) and {floor['int8']:.2f} ms "
            "(int8) per image on one core: no engine can run below it, as no engine multiplies "
            "faster than the core. The last column divides each engine's 1-thread latency by "
            "the floor of its precision.",
            "",
            "## End to end: a folder of photos",
            "",
            f"{e2e['images']} JPEGs of 1600x1200, int8 TFLite model, {e2e['workers']} cores, "
            "all measured in one run:",
            "",
            f"- one core decodes an image (JPEG draft mode + resize) in "
            f"{e2e['decode_ms_one_core']:.2f} ms and classifies it in "
            f"{e2e['inference_ms_one_core']:.2f} ms;",
            f"- so the limit is {e2e['workers']} / (decode + inference) = "
            f"**{e2e['limit_images_per_second']:.0f} images/s**;",
            f"- `nsfw-mobile predict` (one lane per core, each decoding and classifying its own "
            f"images with a single-threaded interpreter) **{ours:.0f} images/s, "
            f"{e2e['share_of_limit']:.0%} of the limit**;",
            f"- a naive loop (full decode, resize, infer, one thread) {naive:.0f} images/s "
            f"({ours / naive:.1f}x slower than predict).",
            "",
            "## Video: `nsfw-mobile predict clip.mp4`",
            "",
            *video_throughput.report(results["video"]),
            "",
            "## Reproduce",
            "",
            "```bash",
            'pip install -e ".[dev,bench]"',
            "python benchmarks/run_all.py",
            "```",
            "",
        ]
    )


if __name__ == "__main__":
    main()
