"""Named model sizes: each preset has the parameter count docs/design.md lists (counted from
its shapes, nothing built; the count is the built model's), any field overrides its preset, and a sweep's trial
that names a preset gets that preset's sizes."""

import pytest

from arplatform import TokenLayout
from arplatform.config import ConfigError, ModelConfig, TrainJobConfig, from_dict, to_dict
from arplatform.core.model import GPT, GPTConfig, parameter_count, training_flops_per_token

# docs/design.md, "Model sizes": 16×16 grids of a K=16,384 codebook, 1,000 classes (ImageNet-like)
DOCUMENTED = {"tiny": 2.62e6, "small": 7.60e6, "B": 111.7e6, "L": 337.7e6, "XL": 752.4e6}


@pytest.mark.parametrize("preset", DOCUMENTED)
def test_each_preset_has_its_documented_size(preset):
    layout = TokenLayout(16384, 1000)
    cfg = ModelConfig(preset=preset).gpt_config(layout.vocab_size, layout.sequence_length(256) - 1)
    count = parameter_count(cfg)
    assert abs(count - DOCUMENTED[preset]) / DOCUMENTED[preset] < 0.01, count
    lookup = 0 if cfg.tie_embeddings else cfg.vocab_size * cfg.embed_dim  # an untied input embedding: no FLOPs
    assert training_flops_per_token(cfg) == 6 * (count - lookup) + 12 * cfg.num_layers * cfg.embed_dim * cfg.seq_len


def test_gpt_b_on_llamagens_vq16_codes_has_llamagens_size():
    """LlamaGen's GPT-B, 111 M parameters, on the 16,384 codes of its VQ-16 (a 16×16 grid)."""
    layout = TokenLayout(16384, 1000)
    cfg = ModelConfig(preset="B").gpt_config(layout.vocab_size, layout.sequence_length(256) - 1)
    assert not cfg.tie_embeddings and 110e6 < parameter_count(cfg) < 113e6


@pytest.mark.parametrize("cfg", [GPTConfig(300, 32, 32, 1, 2), GPTConfig(1000, 64, 96, 3, 4, mlp_ratio=2, bias=True),
                                 GPTConfig(500, 16, 32, 2, 2, tie_embeddings=False)])
def test_the_counted_parameters_are_the_built_models(cfg):
    assert parameter_count(cfg) == GPT(cfg).num_params()


def test_fields_override_their_preset_and_a_trial_can_name_one():
    assert ModelConfig().sizes() == {"embed_dim": 256, "num_layers": 4, "num_heads": 8,
                                     "tie_embeddings": True}  # small, as before
    assert ModelConfig(preset="B", num_layers=2).sizes() == {"embed_dim": 768, "num_layers": 2, "num_heads": 12,
                                                             "tie_embeddings": False}
    assert ModelConfig(preset="B", tie_embeddings=True).sizes()["tie_embeddings"]
    job = from_dict(TrainJobConfig, {"name": "m", "data": {"codes": "x.npy"}})
    trial = to_dict(job)
    trial["model"]["preset"] = "L"  # what a sweep over model.preset does to the base job's dict
    assert from_dict(TrainJobConfig, trial).model.sizes()["num_layers"] == 24
    with pytest.raises(ConfigError, match="model.preset: 'H' is not one of"):
        ModelConfig(preset="H")
