"""Foundation: artifact schemas, provenance, prompts and the embedded model."""

from __future__ import annotations

import pandas as pd
import pytest

from synthctx.data.examples import make_example, read_examples, validate_example, write_examples
from synthctx.data.prompts import (
    char_spans_to_token_spans,
    citation_span_in_header,
    citation_target,
    encode_prompt,
    needle_char_spans,
    render_prompt,
    training_ids,
)
from synthctx.provenance import derived_seed, stable_hash
from synthctx.schema import ArtifactError, read_metadata, read_table, write_table


def _mdqa_example(**over):
    fields = dict(
        example_id="q1", task="mdqa", condition="real", split="eval",
        documents=[
            {"doc_id": "d1", "title": "Rivers", "text": "The Velmora river flows north."},
            {"doc_id": "d2", "title": "Capitals", "text": "The capital of Quistland is Dranholt, a port."},
        ],
        question="What is the capital of Quistland?", answers=["Dranholt"], target="Dranholt",
        gold_doc_ids=["d2"], needles=[{"doc_id": "d2", "start": 28, "end": 36, "kind": "answer"}],
    )
    fields.update(over)
    return make_example(**fields)


def test_write_read_roundtrip_keeps_values_and_metadata(tmp_path):
    ex = _mdqa_example()
    path = tmp_path / "x.parquet"
    write_examples([ex], str(path), {"seed": 7, "model": "m"})
    back = read_examples(str(path))[0]
    assert back["documents"][1]["text"][28:36] == "Dranholt"
    assert back["needles"] == ex["needles"]
    assert read_metadata(path)["seed"] == 7
    assert "versions" not in read_metadata(path) or isinstance(read_metadata(path)["versions"], dict)


def test_read_refuses_wrong_kind_and_missing_column(tmp_path):
    path = tmp_path / "curve.parquet"
    write_table(pd.DataFrame({"step": [1], "epoch": [0.1], "loss": [2.0], "learning_rate": [1e-4],
                              "target_tokens": [3], "seconds": [0.5]}), path, "train_curve")
    with pytest.raises(ArtifactError, match="expected a examples artifact"):
        read_table(path, "examples")
    with pytest.raises(ArtifactError, match="missing columns \\['seconds'\\]"):
        write_table(pd.DataFrame({"step": [1], "epoch": [0.1], "loss": [2.0], "learning_rate": [1e-4],
                                  "target_tokens": [3]}), tmp_path / "bad.parquet", "train_curve")
    assert not (tmp_path / "bad.parquet").exists()


def test_bad_type_names_the_column_and_writes_nothing(tmp_path):
    df = pd.DataFrame({"step": ["one"], "epoch": [0.1], "loss": [2.0], "learning_rate": [1e-4],
                       "target_tokens": [3], "seconds": [0.5]})
    with pytest.raises(ArtifactError, match="'step'"):
        write_table(df, tmp_path / "c.parquet", "train_curve")
    assert list(tmp_path.iterdir()) == []


def test_validation_names_record_and_field(tmp_path):
    bad = _mdqa_example(needles=[{"doc_id": "d2", "start": 0, "end": 3, "kind": "answer"}])
    with pytest.raises(ArtifactError, match="example 'q1'.*'needles'"):
        validate_example(bad, where="f.parquet")
    with pytest.raises(ArtifactError, match="'documents' is empty"):
        validate_example(_mdqa_example(documents=[], gold_doc_ids=[], needles=[]))
    with pytest.raises(ArtifactError, match="unknown document"):
        write_examples([_mdqa_example(gold_doc_ids=["zz"])], str(tmp_path / "e.parquet"))
    assert not (tmp_path / "e.parquet").exists()


def test_seeds_are_stable_across_runs():
    assert stable_hash("abc") == 0xBA7816BF8F01CFEA
    assert derived_seed(1, "x") == derived_seed(1, "x") != derived_seed(2, "x")


def test_citation_helpers():
    assert citation_target(["5", "2", "2"]) == "[2][5]"
    assert "Document [12]"[slice(*citation_span_in_header(12))] == "12"


def test_prompt_spans_map_needles_to_answer_tokens(smollm_tokenizer):
    ex = _mdqa_example()
    rendered = render_prompt(ex, smollm_tokenizer)
    assert rendered.text.endswith("<|im_start|>assistant\n")
    start, end = rendered.doc_text_spans["d2"]
    assert rendered.text[start:end] == ex["documents"][1]["text"]
    ids, offsets = encode_prompt(rendered, smollm_tokenizer)
    (tok_start, tok_end, kind, doc), = char_spans_to_token_spans(needle_char_spans(ex, rendered), offsets)
    assert kind == "answer" and doc == "d2"
    assert smollm_tokenizer.decode(ids[tok_start:tok_end]).strip() == "Dranholt"


def test_training_labels_cover_target_and_end_of_turn_only(smollm_tokenizer):
    ex = _mdqa_example()
    input_ids, labels = training_ids(ex, smollm_tokenizer)
    target = [t for t, lab in zip(input_ids, labels) if lab != -100]
    assert smollm_tokenizer.decode(target) == "Dranholt<|im_end|>"
    assert labels[: len(labels) - len(target)] == [-100] * (len(labels) - len(target))


@pytest.mark.slow
def test_embedded_model_answers_a_trivial_chat_prompt(smollm_dir, smollm_tokenizer):
    import torch

    from synthctx.models.loading import load_model

    torch.manual_seed(0)
    model = load_model(str(smollm_dir))
    assert model.config.num_hidden_layers == 30 and model.config.num_attention_heads == 9
    assert getattr(model.config, "quantization_config", None) is None
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = smollm_tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = smollm_tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in answer.lower()
