"""Sizes of the WeNet variants and the shapes and names of their exported graphs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The dynamo exporter emits opset 18 natively; onnxruntime >= 1.14 runs it.
OPSET = 18
FEATURE_DIM = 80  # log-mel fbank bins
FRAMES_PER_SECOND = 100  # 10 ms frame shift
BEAM = 10  # CTC prefix-beam width of WeNet's Triton pipeline (--beam_size default)
# Shortest input the two stride-2 3x3 convolutions accept: T' = ((7 - 1) // 2 - 1) // 2 = 1.
MIN_FRAMES = 7
# torch.export assumes dynamic sizes of at least 2 (T' >= 2 needs T >= 11, a hypothesis length of
# at least 3 tokens with <sos> and <eos>); the graphs also run below that, as the tests check.
EXPORT_MIN_FRAMES = 11
EXPORT_MIN_HYP_LEN = 3
# Largest sizes the exported graphs are declared for (100k frames: about 16 minutes of audio).
MAX_FRAMES = 100_000
MAX_BATCH = 4096
MAX_HYP_LEN = 4096

ENCODER_INPUTS = ("speech", "speech_lengths")
ENCODER_OUTPUTS = (
    "encoder_out",
    "encoder_out_lens",
    "ctc_log_probs",
    "beam_log_probs",
    "beam_log_probs_idx",
)
DECODER_INPUTS = (
    "encoder_out",
    "encoder_out_lens",
    "hyps_pad_sos_eos",
    "hyps_lens_sos",
    "ctc_score",
)
DECODER_OUTPUTS = ("best_index",)


@dataclass(frozen=True)
class WenetConfig:
    """Sizes and fixed settings of one model variant; every field goes into the cache key."""

    d_model: int
    attention_heads: int
    linear_units: int
    encoder_blocks: int
    decoder_blocks: int
    cnn_module_kernel: int
    vocab_size: int
    conv_norm: Literal["layer_norm", "batch_norm"] = "layer_norm"
    ctc_weight: float = 0.3  # model_conf.ctc_weight of the AISHELL recipe
    beam: int = BEAM
    feature_dim: int = FEATURE_DIM
    seed: int = 0


CONFIGS: dict[str, WenetConfig] = {
    # AISHELL-1 conformer: 12 x 256-d blocks, 4 heads, FFN 2048, kernel 15, 4233 chars, 6 decoder blocks.
    "wenet": WenetConfig(
        d_model=256,
        attention_heads=4,
        linear_units=2048,
        encoder_blocks=12,
        decoder_blocks=6,
        cnn_module_kernel=15,
        vocab_size=4233,
    ),
    # Same architecture, small enough to export and check in about half a minute.
    "wenet-tiny": WenetConfig(
        d_model=64,
        attention_heads=2,
        linear_units=128,
        encoder_blocks=2,
        decoder_blocks=1,
        cnn_module_kernel=15,
        vocab_size=100,
    ),
}


def get_config(name: str) -> WenetConfig:
    """The config of a variant; raises KeyError naming the known variants."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown WeNet variant {name!r}; known: {sorted(CONFIGS)}") from None


def subsampled_frames(frames: int) -> int:
    """Encoder output frames for ``frames`` input frames (two valid 3x3 convs with stride 2)."""
    return max(0, ((frames - 1) // 2 - 1) // 2)
