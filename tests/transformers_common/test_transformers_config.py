"""transformers' ``ConfigTester`` on our config."""

import unittest

from tests.test_configuration_common import ConfigTester

from onevision_encoder.model import OneVisionEncoderConfig


class OneVisionEncoderConfigTest(unittest.TestCase):
    def test_config(self):
        # Two heads of 16: the head dimension must be a multiple of 16 (the 3-D rotary split). No text modality,
        # so no vocab_size.
        tester = ConfigTester(
            self,
            config_class=OneVisionEncoderConfig,
            has_text_modality=False,
            hidden_size=32,
            num_attention_heads=2,
            num_hidden_layers=2,
        )
        tester.run_common_tests()
