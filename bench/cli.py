"""`python -m bench`: run the selected parts for N rounds, then write results.json and chart.png and
print a table per part and the targets table."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import chart, machine, report
from bench.cluster import EXTRACT_CONTENT
from bench.context import Bench, PartRound
from bench.procs import ROOT, Contention, TargetProcess, ensure_package, wait_quiet
from bench.profiles import FULL, PARTS, SMOKE, Profile

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="small sizes, 1 round, a few seconds per part (CI)")
    size.add_argument("--full", action="store_true", help="full sizes (20,000-100,000 URLs a part), 3 rounds, ~10 min")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="results.json, chart.png, logs")
    parser.add_argument("--only", default="", help=f"comma list of parts: {', '.join(PARTS)}")
    parser.add_argument("--rounds", type=int, default=0, help="override the profile's number of rounds")
    parser.add_argument("--no-install", action="store_true", help="never pip-install missing optional peers")
    parser.add_argument(
        "--profile-worker",
        nargs="?",
        const="throughput",
        default="",
        choices=["throughput", "latency"],
        help="after the rounds, py-spy the crawlq workers in one more run of that shape (default throughput)",
    )
    parser.add_argument(
        "--content", choices=["on", "off"], default="on", help="content extraction in every crawlq run (default on)"
    )
    args = parser.parse_args(argv)
    args.parts = [name.strip() for name in args.only.split(",") if name.strip()] or list(PARTS)
    unknown = [name for name in args.parts if name not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    return args


def _profile(args: argparse.Namespace) -> Profile:
    base = FULL if args.full else SMOKE
    changes: dict[str, Any] = {}
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.no_install:
        changes["install"] = False
    return dataclasses.replace(base, **changes)


def _prepare(profile: Profile, parts: list[str]) -> dict[str, bool]:
    """Install what the selected parts need; returns which optional peers are usable."""
    ensure_package("matplotlib", "matplotlib>=3.8", install=True)
    if "classic" in parts and not ensure_package("requests", "requests>=2.31", install=True):
        raise SystemExit("bench: the classic part needs requests (pip install requests)")
    scrapy = "throughput" in parts and ensure_package("scrapy", "scrapy>=2.11", install=profile.install)
    return {"scrapy": scrapy}


async def _round(bench: Bench, parts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"round": bench.round, "parts": {}}
    bench.done = {}
    for name in parts:
        print(f"[round {bench.round}/{bench.profile.rounds}] {name} ...", flush=True)
        quiet = await wait_quiet(bench.profile.quiet_wait_s) if bench.profile.quiet_wait_s else {}
        code_before = machine.code_fingerprint(ROOT)["sha256"]
        started = time.perf_counter()
        module = importlib.import_module(f"bench.parts.{name}")
        contention = Contention([bench.target.pid]).start()
        try:
            await asyncio.to_thread(bench.target.reset)
            result: PartRound = await module.run(bench)
            bench.done[name] = result
            entry = result.as_dict()
        except Exception as exc:
            traceback.print_exc()
            entry = {"figures": {}, "rows": [], "skipped": {}, "detail": {}, "error": f"{type(exc).__name__}: {exc}"}
        entry["elapsed_s"] = round(time.perf_counter() - started, 2)
        entry["code"] = machine.code_fingerprint(ROOT)["sha256"]
        if entry["code"] != code_before:
            entry["code_before"] = code_before  # crawlq's sources changed while this part ran
        entry["contention"] = {**contention.stop(), **quiet}
        if str(entry["detail"].get("source", "")).startswith("throughput"):
            entry["contention"] = out["parts"]["throughput"]["contention"]  # its figures come from there
        out["parts"][name] = entry
        shown = ", ".join(f"{key} {value:g}" for key, value in list(entry["figures"].items())[:6])
        foreign = f"all its processes used {entry['contention'].get('own_cpu_s', 0):g} s of CPU, "
        foreign += f"other programs {100 * entry['contention']['foreign_share']:.0f}% of the machine"
        print(f"    {entry['elapsed_s']:.1f} s ({foreign}): {entry.get('error') or shown}", flush=True)
    return out


async def _run(args: argparse.Namespace, profile: Profile, peers: dict[str, bool]) -> dict[str, Any]:
    workdir = args.out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "logs").mkdir(parents=True)
    rounds: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with TargetProcess() as target:
        bench = Bench(profile, target, workdir, scrapy=peers["scrapy"], out_dir=args.out)
        for number in range(1, profile.rounds + 1):
            bench.round = number
            rounds.append(await _round(bench, args.parts))
            (args.out / "rounds.partial.json").write_text(json.dumps(rounds, default=str))  # kept if a later round dies
        if args.profile_worker:
            from bench import profiling

            bench.round = 0
            try:
                extra["worker_profile"] = await profiling.run(bench, args.profile_worker)
            except Exception as exc:
                traceback.print_exc()
                extra["worker_profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    return {"rounds": rounds, **extra}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    for name in [name for name in os.environ if name.startswith("CRAWLQ_")]:
        del os.environ[name]  # the bench sets every crawlq setting itself
    profile = _profile(args)
    EXTRACT_CONTENT["on"] = args.content == "on"
    args.out.mkdir(parents=True, exist_ok=True)
    peers = _prepare(profile, args.parts)
    started = time.time()
    results: dict[str, Any] = {
        "profile": profile.name,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        "parts": args.parts,
        "machine": machine.describe(),
        "code": machine.code_fingerprint(ROOT),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    results.update(asyncio.run(_run(args, profile, peers)))
    results["duration_s"] = round(time.time() - started, 1)
    code_after = machine.code_fingerprint(ROOT)
    seen = {part["code"] for one in results["rounds"] for part in one["parts"].values()} | {code_after["sha256"]}
    if seen != {results["code"]["sha256"]}:
        results["code"]["changed_during_run"] = sorted(seen)
        print("bench: WARNING: crawlq's sources changed during the run; figures mix two versions", file=sys.stderr)
    summary = report.summarise(results["rounds"])
    results["summary"] = summary
    results["targets"] = report.targets(summary, results["rounds"])
    results["profile_sizes"] = dataclasses.asdict(profile)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    info = results["machine"]
    title = f"crawlq bench ({profile.name}, {profile.rounds} round(s)) on {info['nproc']} x {info['cpu_model']}"
    title += f", Python {info['python']}"
    how = chart.write_chart(args.out / "chart.png", summary, title)
    print(report.format_tables(results["rounds"], summary, args.parts))
    print(report.format_targets(results["targets"]))
    print(f"code {results['code']['sha256']} (newest source file {results['code']['newest_mtime']})")
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'} ({how}); {results['duration_s']} s")
    failed = [name for one in results["rounds"] for name, part in one["parts"].items() if part.get("error")]
    if failed:
        print(f"bench: part(s) failed: {', '.join(sorted(set(failed)))}", file=sys.stderr)
        sys.exit(1)
