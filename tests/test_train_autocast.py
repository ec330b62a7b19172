"""train.cpu_autocast: bf16 autocast of the CPU training passes, fp32 weights and optimizer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from synthctx.schema import read_table
from synthctx.train.lora import TrainSettings, cpu_autocast_context, target_token_loss, train_condition

from test_train import SETTINGS, SPEC, qa_examples, tiny_model_dir  # noqa: F401 (fixture)


def test_autocast_runs_matmuls_in_bf16_on_cpu_only():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with cpu_autocast_context(replace(SETTINGS, cpu_autocast="bfloat16"), "cpu"):
        assert lin(x).dtype == torch.bfloat16
    with cpu_autocast_context(replace(SETTINGS, cpu_autocast=None), "cpu"):
        assert lin(x).dtype == torch.float32
    # GPUs train in the model's own dtype: the setting is ignored there.
    with cpu_autocast_context(replace(SETTINGS, cpu_autocast="bfloat16"), "cuda:0"):
        assert lin(x).dtype == torch.float32


def test_autocast_rejects_an_unknown_dtype():
    with pytest.raises(ValueError, match="train.cpu_autocast"):
        cpu_autocast_context(replace(SETTINGS, cpu_autocast="int8"), "cpu")


def test_bf16_autocast_training_keeps_fp32_weights_and_follows_fp32(tiny_model_dir, tmp_path):
    ex = qa_examples(1)[0]
    repeated = [dict(ex, example_id=f"rep-{i}") for i in range(4)]
    base = replace(SETTINGS, epochs=1, gradient_accumulation=1, learning_rate=2e-2, warmup_ratio=0.0,
                   lora={**SETTINGS.lora, "dropout": 0.0})
    curves = {}
    for name, autocast in (("fp32", None), ("bf16", "bfloat16")):
        summary = train_condition(examples=repeated, model_dir=tiny_model_dir, model_settings=SPEC,
                                  settings=replace(base, cpu_autocast=autocast), seed=0,
                                  out_dir=tmp_path / name, checkpoint_dir=tmp_path / f"ckpt-{name}", device="cpu")
        curves[name] = read_table(tmp_path / name / "train_curve.parquet", "train_curve")["loss"].tolist()
        from safetensors.torch import load_file

        weights = load_file(str(tmp_path / name / "adapter_model.safetensors"))
        assert weights and all(w.dtype == torch.float32 for w in weights.values())
        assert summary["optimizer_steps"] == 4
    # Same data and seed: the bf16 run's losses track the fp32 run's (bf16 keeps ~3 digits),
    # and both fall.
    assert curves["bf16"] != curves["fp32"]
    assert curves["bf16"] == pytest.approx(curves["fp32"], rel=0.05)
    assert curves["bf16"][-1] < curves["bf16"][0]


def test_config_schema_accepts_cpu_autocast():
    from pathlib import Path

    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml").read_text())
    train = schema["properties"]["train"]["properties"]
    assert "cpu_autocast" in train
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())["train"]
    assert TrainSettings.from_config({**config, "cpu_autocast": "bfloat16"}).cpu_autocast == "bfloat16"
