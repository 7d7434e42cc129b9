"""torch.compile(fullgraph=True) of the whole encoder in every input mode: one graph, eager's results, few compiles."""

import pytest
import torch
from conftest import tiny_config

from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.video.grid import chunk_visible_indices, frame_positions

PATCH = 14


def square_image(n: int, generator: torch.Generator) -> dict:
    return {"pixel_values": torch.randn(2, 3, PATCH * n, PATCH * n, generator=generator)}


def native_image(n: int, generator: torch.Generator) -> dict:
    return {"pixel_values": torch.randn(1, 3, PATCH * n, PATCH * (n + 3), generator=generator)}


def chunk(n: int, generator: torch.Generator) -> dict:
    """``n`` frames of 2x2 patches placed on the 64-frame grid, as the video processor places a chunk."""
    return {
        "pixel_values": torch.randn(1, 3, n, 2 * PATCH, 2 * PATCH, generator=generator),
        "visible_indices": chunk_visible_indices(frame_positions(n), (2, 2)),
    }


def codec_patches(n: int, generator: torch.Generator) -> dict:
    """``3n`` of the 32 patches of an 8-frame clip, gathered by the model (a sparse codec selection)."""
    return {
        "pixel_values": torch.randn(2, 3, 8, 2 * PATCH, 2 * PATCH, generator=generator),
        "visible_indices": torch.stack([torch.randperm(32, generator=generator)[: 3 * n] for _ in range(2)]),
    }


def packed_samples(n: int, generator: torch.Generator) -> list[dict]:
    """An image of ``2n`` tokens, another of the same length (one attention group), and ``n`` codec patches."""
    return [
        {"pixel_values": torch.randn(3, PATCH * n, 2 * PATCH, generator=generator)},
        {"pixel_values": torch.randn(3, 2 * PATCH, PATCH * n, generator=generator)},
        {
            "pixel_values": torch.randn(3, 4, 2 * PATCH, 2 * PATCH, generator=generator),
            "visible_indices": torch.randperm(16, generator=generator)[:n],
        },
    ]


MODES = {
    "square": square_image,
    "native": native_image,
    "chunk": chunk,
    "codec": codec_patches,
    "packed": packed_samples,
    "padded": packed_samples,
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def model() -> OneVisionEncoderModel:
    torch.manual_seed(0)
    return OneVisionEncoderModel(tiny_config()).eval()


def forward_of(model: OneVisionEncoderModel, mode: str):
    """The function a user compiles for ``mode``, taking that mode's inputs."""
    if mode in ("packed", "padded"):
        return lambda samples: model.forward_packed(samples, padded=mode == "padded")
    return lambda inputs: model(**inputs)


class CountingBackend:
    """A torch.compile backend that runs the traced graph as is and counts the graphs it is given."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1
        return graph.forward


def assert_same_outputs(got, want) -> None:
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_every_input_mode_compiles_to_one_graph_equal_to_eager(model, mode):
    inputs = MODES[mode](3, torch.Generator().manual_seed(0))
    forward = forward_of(model, mode)
    # fullgraph: a graph break is an error; aot_eager also traces the backward-ready ATen graph, without C++.
    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        assert_same_outputs(compiled(inputs), forward(inputs))


@pytest.mark.parametrize("mode", MODES)
def test_compiles_stay_bounded_across_token_counts(model, mode):
    # torch.compile's default: the first call compiles for its sizes, a second size recompiles once with dynamic
    # sizes, and every later token count reuses that graph.
    counter = CountingBackend()
    forward = forward_of(model, mode)
    compiled = torch.compile(forward, fullgraph=True, backend=counter)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n in (3, 4, 5, 6, 7):
            inputs = MODES[mode](n, generator)
            assert_same_outputs(compiled(inputs), forward(inputs))
    assert counter.graphs <= 2


@pytest.mark.parametrize(
    ("indices", "problem"),
    [
        (torch.tensor([0, 5, 32]), "contains an index that is negative or not below the number of patches"),
        (torch.tensor([0, -1, 4]), "contains an index that is negative or not below the number of patches"),
        (torch.tensor([0, 5, 5]), "repeats an index within a sample"),
    ],
)
def test_compiled_model_still_refuses_bad_indices(model, indices, problem):
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    clip = torch.randn(1, 3, 8, 2 * PATCH, 2 * PATCH)
    with torch.no_grad():
        compiled(pixel_values=clip, visible_indices=torch.tensor([0, 5, 31]))  # valid indices run
        with pytest.raises(RuntimeError, match=f"visible_indices {problem}"):
            compiled(pixel_values=clip, visible_indices=indices)


def test_inductor_compiled_encoder_equals_eager(model):
    # The default backend (C++ code generation on CPU): the one test that pays for it.
    generator = torch.Generator().manual_seed(2)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for inputs in (codec_patches(3, generator), codec_patches(5, generator)):
            assert_same_outputs(compiled(**inputs), model(**inputs))
