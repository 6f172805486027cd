"""One core's peak multiply-accumulate rate, float32 FMA and int8 dot products: the compute
floor of benchmarks/run_all.py.

A GEMM library reaches a share of the peak that depends on the library and the shape
(numpy's float32 GEMM reached 63.5 G MAC/s on an AMD EPYC where LiteRT's float32 network
ran faster than that "floor"). The peak itself is what the core's vector units do when
nothing but independent multiply-adds are in flight: this module compiles a kernel of
twelve independent accumulator chains (FMA on float32; VNNI ``vpdpbusd`` on u8 x s8, or
``vpmaddubsw`` without VNNI) for the widest vectors the CPU has (``-march=native``), and
times it in the thread's CPU time (time the core gave to other processes does not count),
the best of several tries.

Without a C compiler the peak is computed instead: vector lanes x 2 units (no x86 core
issues more than two FMA or VNNI instructions per cycle) x the clock /proc/cpuinfo states,
an estimate (a core in turbo runs faster than its stated clock), and said to be one.

    python benchmarks/peak.py     # prints the figures as JSON
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

KERNEL = r"""
#include <immintrin.h>
#include <stdint.h>

#define CHAINS 12
/* every chain in its own register: the loop over chains is unrolled */
#define UNROLL _Pragma("GCC unroll 12")

int f32_lanes(void) {
#if defined(__AVX512F__)
    return 16;
#elif defined(__AVX__)
    return 8;
#else
    return 4;
#endif
}

/* MACs per instruction of the int8 kernel below */
int i8_macs_per_instruction(void) {
#if defined(__AVX512VNNI__)
    return 64;
#elif defined(__AVXVNNI__)
    return 32;
#elif defined(__AVX2__)
    return 32;
#else
    return 16;
#endif
}

const char *isa(void) {
#if defined(__AVX512VNNI__)
    return "avx512f FMA, avx512_vnni vpdpbusd";
#elif defined(__AVX512F__) && defined(__AVXVNNI__)
    return "avx512f FMA, avx_vnni vpdpbusd (256-bit)";
#elif defined(__AVX512F__)
    return "avx512f FMA, avx512bw vpmaddubsw";
#elif defined(__AVXVNNI__)
    return "avx2 FMA, avx_vnni vpdpbusd";
#elif defined(__AVX2__)
    return "avx2 FMA, avx2 vpmaddubsw";
#else
    return "sse";
#endif
}

float f32_fma(long iterations) {
#if defined(__AVX512F__)
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps(0.001f * i);
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.0001f);
    for (long k = 0; k < iterations; k++)
        UNROLL for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
#elif defined(__FMA__)
    __m256 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps(0.001f * i);
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.0001f);
    for (long k = 0; k < iterations; k++)
        UNROLL for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float out[8], total = 0;
    __m256 sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm256_add_ps(sum, acc[i]);
    _mm256_storeu_ps(out, sum);
    for (int i = 0; i < 8; i++) total += out[i];
    return total;
#else
    float acc[CHAINS * 4];
    for (int i = 0; i < CHAINS * 4; i++) acc[i] = 0.001f * i;
    for (long k = 0; k < iterations; k++)
        for (int i = 0; i < CHAINS * 4; i++) acc[i] = acc[i] * 0.999f + 0.0001f;
    float total = 0;
    for (int i = 0; i < CHAINS * 4; i++) total += acc[i];
    return total;
#endif
}

int32_t i8_dot(long iterations) {
#if defined(__AVX512VNNI__)
    __m512i acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (long k = 0; k < iterations; k++)
        UNROLL for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    __m512i sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm512_add_epi32(sum, acc[i]);
    return _mm512_reduce_add_epi32(sum);
#elif defined(__AVXVNNI__) || defined(__AVX2__)
    __m256i acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_epi32(i);
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
    for (long k = 0; k < iterations; k++)
        UNROLL for (int i = 0; i < CHAINS; i++)
#if defined(__AVXVNNI__)
            acc[i] = _mm256_dpbusd_avx_epi32(acc[i], a, b);
#else
            acc[i] = _mm256_add_epi16(acc[i], _mm256_maddubs_epi16(a, b));
#endif
    __m256i sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm256_add_epi32(sum, acc[i]);
    int32_t out[8], total = 0;
    _mm256_storeu_si256((__m256i *)out, sum);
    for (int i = 0; i < 8; i++) total += out[i];
    return total;
#else
    return 0;
#endif
}
"""

TRIES = 5
SECONDS = 0.1


def _compile(folder: Path) -> ctypes.CDLL | None:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    source, library = folder / "peak.c", folder / "peak.so"
    source.write_text(KERNEL)
    made = subprocess.run(
        [compiler, "-O3", "-march=native", "-shared", "-fPIC", str(source), "-o", str(library)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        return None
    kernels = ctypes.CDLL(str(library))
    kernels.f32_fma.argtypes = kernels.i8_dot.argtypes = [ctypes.c_long]
    kernels.f32_fma.restype = ctypes.c_float
    kernels.i8_dot.restype = ctypes.c_int32
    kernels.isa.restype = ctypes.c_char_p
    return kernels


def _rate(kernel, macs_per_iteration: int) -> float:
    """Best MAC/s of ``kernel(iterations)`` over TRIES runs of about SECONDS each, timed in
    this thread's CPU time: time the core gave to other processes does not count."""
    iterations = 1000
    while True:  # size the run to about SECONDS
        started = time.thread_time()
        kernel(iterations)
        elapsed = time.thread_time() - started
        if elapsed > SECONDS / 4:
            break
        iterations *= 4
    iterations = int(iterations * SECONDS / elapsed)
    best = 0.0
    for _ in range(TRIES):
        started = time.thread_time()
        kernel(iterations)
        best = max(best, iterations * macs_per_iteration / (time.thread_time() - started))
    return best


def _stated_clock_hz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                return float(value) * 1e6
    except (OSError, ValueError):
        pass
    return None


def _computed(isa_flags: set[str]) -> dict:
    lanes = 16 if "avx512f" in isa_flags else 8 if "avx" in isa_flags else 4
    int8 = lanes * 4  # four u8 x s8 products per 32-bit lane (VNNI, or vpmaddubsw pairs)
    clock = _stated_clock_hz() or 3e9
    return {
        "method": f"computed: {lanes} float32 lanes (int8: {int8} MACs) per instruction x 2 "
        f"units x the stated clock {clock / 1e9:.2f} GHz (an estimate: turbo runs faster)",
        "float32_gmacs": lanes * 2 * clock / 1e9,
        "int8_gmacs": int8 * 2 * clock / 1e9,
    }


def peak(isa_flags: set[str] | None = None) -> dict:
    """float32 and int8 peak G MAC/s of one core, and how they were obtained."""
    with tempfile.TemporaryDirectory() as tmp:
        kernels = _compile(Path(tmp))
        if kernels is None:
            return _computed(isa_flags or set())
        chains = 12
        f32 = _rate(kernels.f32_fma, chains * kernels.f32_lanes())
        i8 = _rate(kernels.i8_dot, chains * kernels.i8_macs_per_instruction())
        return {
            "method": f"measured: a compiled kernel of {chains} independent chains "
            f"({kernels.isa().decode()}), best of {TRIES} runs on one core, thread CPU time",
            "float32_gmacs": f32 / 1e9,
            "int8_gmacs": i8 / 1e9,
        }


if __name__ == "__main__":
    print(json.dumps(peak(), indent=2))
