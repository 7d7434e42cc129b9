"""transformers' ``ModelTesterMixin`` on ``OneVisionEncoderModel``, with a tiny config and image inputs.

Adapted, not skipped, where the mixin expects transformers' lenient loading (a checkpoint missing weights
loads with a report): ours refuses it unless ``strict=False``. Those tests first check the refusal, then run
the mixin's own checks through :func:`lenient_loading`.
"""

import contextlib
import os
import tempfile
import unittest
from unittest import mock

import torch
from safetensors.torch import save_file
from tests.test_modeling_common import ModelTesterMixin, floats_tensor

from onevision_encoder.model import CheckpointMismatchError, OneVisionEncoderConfig, OneVisionEncoderModel


@contextlib.contextmanager
def lenient_loading():
    """``OneVisionEncoderModel.from_pretrained`` with ``strict=False`` unless a test passes ``strict`` itself."""
    strict_loader = OneVisionEncoderModel.from_pretrained.__func__

    def lenient(cls, *args, **kwargs):
        return strict_loader(cls, *args, **{"strict": False, **kwargs})

    with mock.patch.object(OneVisionEncoderModel, "from_pretrained", classmethod(lenient)):
        yield


class OneVisionEncoderModelTester:
    def __init__(
        self,
        parent,
        batch_size=3,
        image_size=8,
        patch_size=2,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_act="gelu",
        attention_dropout=0.0,
        initializer_range=0.02,
        use_head=True,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size  # 2 heads of 16, the smallest head the 3-D rotary split allows
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.use_head = use_head
        # No class token: one token per patch.
        self.seq_length = (image_size // patch_size) ** 2
        # The encoder has no loss, and transformers' training tests need one (they leave out its own base models).
        # Gradients with and without activation checkpointing are compared in tests/test_model.py.
        self.is_training = False

    def get_config(self):
        return OneVisionEncoderConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_channels=self.num_channels,
            patch_size=self.patch_size,
            image_size=self.image_size,
            hidden_act=self.hidden_act,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
            use_head=self.use_head,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}

    def create_and_check_model(self, config, pixel_values):
        model = OneVisionEncoderModel(config).eval()
        with torch.no_grad():
            result = model(pixel_values)
            clip = model(pixel_values[:, :, None].expand(-1, -1, 2, -1, -1))  # two frames: twice the tokens
        self.parent.assertEqual(result.last_hidden_state.shape, (self.batch_size, self.seq_length, self.hidden_size))
        self.parent.assertEqual(result.pooler_output.shape, (self.batch_size, self.hidden_size))
        self.parent.assertEqual(clip.last_hidden_state.shape, (self.batch_size, 2 * self.seq_length, self.hidden_size))


class OneVisionEncoderModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (OneVisionEncoderModel,)
    # Token embeddings: a vision encoder has none to resize.
    test_resize_embeddings = False
    # transformers 4.57 only: head pruning (prune_heads) and head masks (a head_mask input), which the encoder does
    # not offer (transformers 5 dropped both).
    test_pruning = False
    test_head_masking = False
    # transformers 5 runs this only for models it dates after 2022 (by a copyright line); _init_weights must cover
    # every weight, so it runs here too (4.57 has no such switch and skips it).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = OneVisionEncoderModelTester(self)

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    def test_model_get_set_embeddings(self):
        # Adapted: the mixin expects a token nn.Embedding to get and replace; a vision encoder's input embedding is
        # its patch Conv2d, and it has no output embeddings.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        model = OneVisionEncoderModel(config)
        self.assertIs(model.get_input_embeddings(), model.embeddings.patch_embedding)
        self.assertIsNone(model.get_output_embeddings())

    def test_can_init_all_missing_weights(self):
        # Adapted: the mixin loads an empty state dict and expects every weight initialised as missing (lenient).
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with self.assertRaisesRegex(CheckpointMismatchError, r"missing weights: .*embeddings\.patch_embedding\.weight"):
            OneVisionEncoderModel.from_pretrained(None, config=config, state_dict={})
        with lenient_loading():
            super().test_can_init_all_missing_weights()

    def test_model_weights_reload_no_missing_tied_weights(self):
        # Adapted: the mixin replaces the weights file with one foreign tensor and expects a load that reports every
        # weight missing (lenient).
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        with tempfile.TemporaryDirectory() as folder:
            OneVisionEncoderModel(config).save_pretrained(folder)
            save_file({"tensor": torch.tensor([1, 2])}, os.path.join(folder, "model.safetensors"), {"format": "pt"})
            message = r"missing weights: .*head\.probe.*; unexpected weights: tensor\)"
            with self.assertRaisesRegex(CheckpointMismatchError, message):
                OneVisionEncoderModel.from_pretrained(folder)
        with lenient_loading():
            super().test_model_weights_reload_no_missing_tied_weights()
