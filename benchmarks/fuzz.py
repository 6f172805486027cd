"""Run the coverage-guided fuzz targets (atheris) and report executions and findings.

    python benchmarks/fuzz.py --minutes 10              # every target, one after another
    python benchmarks/fuzz.py --minutes 10 --jobs 2     # two targets at a time
    python benchmarks/fuzz.py --seconds 8 --target image --json
    python benchmarks/fuzz.py --runs 300 --seed 1 --target image  # fixed: same inputs anywhere

Targets and their contract are in fuzz/targets.py: any input gives a result or one
of the toolkit's typed errors. Limits per input: 10 s (a hang) and 2048 MB of
resident memory (growth past it is a finding). Each target starts from its seed
corpus (fuzz/corpus/TARGET) and keeps what it learns in a work folder outside the
source tree (default: the user's cache, ~/.cache/nsfw-mobile/fuzz/work/TARGET).
Findings of each run go to a folder of that run's own (default: a new temporary
folder, printed); once fixed, copy each to fuzz/regressions/TARGET/, where
tests/test_fuzz.py replays it.

With --runs and --seed, a run is fixed: libFuzzer runs exactly that many inputs from
that seed, with no time limit, no corpus reload and a fixed hash seed, so it explores
the same inputs on any machine (the same final coverage); --seconds is then ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
TIMEOUT_S = 10
FIXED_TIMEOUT_S = 60
"""A fixed run's limit per input: a hang is still found, a slow machine is not a finding."""
RSS_LIMIT_MB = 2048
STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+)")


def targets() -> list[str]:
    sys.path.insert(0, str(FUZZ))
    import targets as module

    return list(module.TARGETS)


def cache_folder() -> Path:
    """Where open-ended runs keep their growing corpora: the user's cache, not the checkout."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nsfw-mobile" / "fuzz" / "work"


def run_target(
    name: str,
    seconds: float,
    runs: int | None = None,
    seed: int | None = None,
    work_root=None,
    findings_root=None,
) -> dict:
    """Fuzz one target. A fixed run (``runs`` and ``seed``) starts from the seed corpus alone
    (a fresh work folder unless one is given) and runs exactly ``runs`` inputs."""
    fixed = runs is not None and seed is not None
    if work_root is None:
        work_root = tempfile.mkdtemp(prefix="nsfw-fuzz-work-") if fixed else cache_folder()
    work = Path(work_root) / name
    findings = Path(findings_root or tempfile.mkdtemp(prefix="nsfw-fuzz-findings-"))
    work.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    before = set(findings.iterdir())
    limits = [f"-runs={runs}", f"-seed={seed}", "-reload=0"] if fixed else []
    if not fixed:
        limits.append(f"-max_total_time={int(seconds)}")
        limits += [f"-runs={runs}"] if runs is not None else []
        limits += [f"-seed={seed}"] if seed is not None else []
    started = time.perf_counter()
    process = subprocess.run(
        [
            sys.executable,
            FUZZ / "run_target.py",
            name,
            work,
            FUZZ / "corpus" / name,
            *limits,
            f"-timeout={FIXED_TIMEOUT_S if fixed else TIMEOUT_S}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-artifact_prefix={findings}/{name}-",
            "-print_final_stats=1",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"} if fixed else None,
    )
    log = process.stderr
    executions = coverage = features = 0
    for match in STATS.finditer(log):
        executions, coverage, features = int(match[1]), int(match[2]), int(match[3])
    final = re.search(r"stat::number_of_executed_units:\s+(\d+)", log)
    if final:
        executions = int(final[1])
    new = sorted(str(p) for p in set(findings.iterdir()) - before)
    return {
        "target": name,
        "seconds": round(time.perf_counter() - started, 1),
        "executions": executions,
        "coverage": coverage,
        "features": features,
        "corpus": len(list(work.iterdir())),
        "work": str(work),
        "exit_code": process.returncode,
        "findings_folder": str(findings),
        "findings": new,
        "log_tail": "" if process.returncode == 0 else log[-3000:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--target", action="append", help="a target name; repeat (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at the same time")
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument(
        "--seed", type=int, help="libFuzzer seed; with --runs: a fixed run (default: random)"
    )
    parser.add_argument(
        "--work",
        help="where corpora grow (default: ~/.cache/nsfw-mobile/fuzz/work; a fixed run: a new "
        "temporary folder)",
    )
    parser.add_argument(
        "--findings", help="where this run writes its findings (default: a new temporary folder)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per target")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (args.minutes or 1) * 60
    names = args.target or targets()
    unknown = sorted(set(names) - set(targets()))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; targets: {', '.join(targets())}")
    findings = Path(args.findings or tempfile.mkdtemp(prefix="nsfw-fuzz-findings-"))
    if not args.json:
        print(f"findings of this run go to {findings}", flush=True)
    failed = False
    with ThreadPoolExecutor(args.jobs) as pool:

        def run(name: str) -> dict:
            return run_target(name, seconds, args.runs, args.seed, args.work, findings)

        for result in pool.map(run, names):
            failed |= result["exit_code"] != 0
            if args.json:
                print(json.dumps(result), flush=True)
                continue
            status = "ok" if result["exit_code"] == 0 else f"FINDING (exit {result['exit_code']})"
            print(
                f"{result['target']:<10} {result['seconds']:>7.1f} s  "
                f"{result['executions']:>9,} executions  coverage {result['coverage']:>5}  "
                f"corpus {result['corpus']:>4}  {status}",
                flush=True,
            )
            for finding in result["findings"]:
                print(f"  finding: {finding}")
            if result["log_tail"]:
                print("  " + result["log_tail"].strip().replace("\n", "\n  ")[-1500:])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
