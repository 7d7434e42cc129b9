"""Static shards against Ray's dynamic hand-out, on videos of very different lengths, with 2 workers.

The corpus: 12 short clips (48 frames) and 2 ten times longer (480 frames), 720p, a key frame every 250
frames (x264's default), so a long clip costs several short ones. Sorted by name the long clips are the
1st and 3rd videos: ``--shard i/2`` takes every other video, so both land in shard 0, as they do for
about half of all placements of 2 long videos among 14 (42 of 91).

- static: ``onevision preprocess --shard 0/2`` and ``--shard 1/2``, started together (a Slurm array of 2),
  timed until the slower one ends;
- ray: one ``onevision preprocess --engine ray`` joining a Ray of 2 CPUs that this script starts once (a
  running cluster), each video handed to whichever worker is free;
- ray, starting its own: ``--engine ray --workers 2``, a Ray started for the run (one machine, no cluster);
- one short clip, local and on the running Ray: what a job costs beyond its work (imports, Ray's
  connection, its worker processes), to tell Ray's fixed cost per job from its scheduling.

Every job is a fresh command (imports, Ray's connection and its worker processes included) writing to an
empty folder. Jobs run interleaved, once each per round; figures are medians over ``--rounds`` rounds.

    python benchmarks/bench_engines.py [--rounds 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONEVISION = str(Path(sys.executable).with_name("onevision"))
SHORT_FRAMES, LONG_CLIPS, SHORT_CLIPS, LENGTH_RATIO = 48, 2, 12, 10
SIZE = (720, 1280)
STATIC, RAY, ONE = "static --shard i/2, 2 processes", "ray, joining a running Ray of 2 CPUs", "one short clip"


def corpus(folder: Path) -> list[Path]:
    """The clips, made on first use: panning block textures, a long clip being ten short ones in a row."""
    from onevision_encoder.video.encode import write_video
    from onevision_encoder.video.synthetic import make_clip

    def frames(seed: int):
        return make_clip("panning", SHORT_FRAMES, SIZE, shift=(0, 0), background="blocks", seed=seed).frames

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"video{number:02d}.mp4" for number in range(LONG_CLIPS + SHORT_CLIPS)]
    long_names = names[0 : 2 * LONG_CLIPS : 2]  # the same shard of 2
    for seed, name in enumerate(names):
        if (folder / name).exists():
            continue
        print(f"generating {folder / name} ...", flush=True)
        parts = LENGTH_RATIO if name in long_names else 1
        clip = itertools.chain.from_iterable(frames(seed * 100 + part) for part in range(parts))
        write_video(folder / name, clip, gop=250)
    return [folder / name for name in long_names]


def timed(commands: list[list[str]]) -> float:
    """Seconds until every command, all started together, has ended (each must succeed)."""
    started = time.perf_counter()
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for command in commands]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{process.args} failed:\n{stderr.decode()}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, help="where the clips are kept (default: a temporary folder)")
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or Path(scratch) / "videos"
        long_names = {clip.name for clip in corpus(data)}
        one_clip = Path(scratch) / "one.txt"
        one_clip.write_text(f"{next(p for p in sorted(data.glob('*.mp4')) if p.name not in long_names)}\n")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        address = ray.get_runtime_context().gcs_address
        out = Path(scratch) / "out"
        every, one = ([ONEVISION, "preprocess", str(source), "--out", str(out)] for source in (data, one_clip))
        on_ray = ["--engine", "ray", "--ray-address", address]
        jobs = {
            STATIC: [[*every, "--shard", f"{index}/2"] for index in range(2)],
            RAY: [[*every, *on_ray]],
            "ray, starting its own (--workers 2)": [[*every, "--engine", "ray", "--workers", "2"]],
            f"{ONE}, local": [one],
            f"{ONE}, {RAY}": [[*one, *on_ray]],
        }
        seconds: dict[str, list[float]] = {name: [] for name in jobs}
        costs: dict[tuple[str, bool], list[float]] = {(name, long): [] for name in (STATIC, RAY) for long in (0, 1)}
        for round_number in range(args.rounds):
            for name, commands in jobs.items():
                shutil.rmtree(out, ignore_errors=True)
                seconds[name].append(timed(commands))
                print(f"round {round_number + 1}: {name}: {seconds[name][-1]:.2f} s", flush=True)
                if name in (STATIC, RAY):
                    for meta in out.glob("*/meta.json"):
                        seconds_of_one = json.loads(meta.read_text())["seconds"]
                        costs[name, meta.parent.name in long_names].append(seconds_of_one)
        ray.shutdown()

    median = {name: statistics.median(values) for name, values in seconds.items()}
    print()
    for name in (STATIC, RAY):
        short, long = (statistics.median(costs[name, kind]) for kind in (0, 1))
        print(f"one selection in {name}: short clip {short:.2f} s, long clip {long:.2f} s ({long / short:.1f}x)")
    print(f"\n| job (medians of {args.rounds} rounds) | wall | vs static |\n|---|---:|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.2f} s | {value / median[STATIC]:.2f}x |")
    fixed = median[f"{ONE}, {RAY}"] - median[f"{ONE}, local"]
    print(f"\nstatic / ray: {median[STATIC] / median[RAY]:.2f}x")
    print(f"Ray's fixed cost per job (one clip: ray - local): {fixed:.2f} s")
    print(f"static / ray, that fixed cost left out: {median[STATIC] / (median[RAY] - fixed):.2f}x")


if __name__ == "__main__":
    main()
