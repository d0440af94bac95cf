"""The documentation that is generated or checked: docs/cli.md, made from the command line itself."""

from pathlib import Path

from vqgen.cli.reference import REGENERATE, reference
from vqgen.config import RVQ_CODES, VQ_CODES, MaskedConfig, PixelCNNConfig, TransformerConfig, VQVAEConfig

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current():
    written = (ROOT / "docs" / "cli.md").read_text()
    assert written == reference(), f"docs/cli.md is out of date; run: {REGENERATE}"


def test_cli_reference_lists_every_command_option_and_default():
    text = reference()
    for command in ("train-vqvae", "extract-codes", "train-prior", "sample", "evaluate", "info"):
        assert f"## vqgen {command}\n" in text
    assert VQVAEConfig.num_codes is None  # K follows the quantizer, which follows the image kind: told in the help
    assert f"| `--num-codes` / `-K` `<int>` |  | Codebook size K; default: {VQ_CODES} for vq, {RVQ_CODES} a codebook" in text
    assert "| `--ema` / `--no-ema` | --ema |" in text
    assert PixelCNNConfig.channels is None  # the PixelCNN's width follows the image kind: shown as auto
    each_default = (f"pixelcnn auto, transformer {TransformerConfig.channels}, "
                    f"masked {MaskedConfig.channels}")
    assert f"| `--channels` `<int>` | {each_default} |" in text  # a OneOf option: each choice's default
    assert "`--help`" not in text
    assert "**Codebook (vq, rvq)**" in text and text.index("**Data**") < text.index("**Output**")  # the help panels
