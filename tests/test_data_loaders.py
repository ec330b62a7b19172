"""Readers of the original dataset formats: values from the handwritten fixtures, and errors."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from conftest import FIXTURES
from synthctx.data.text import answer_matches, find_answer_spans, normalize_answer, split_sentences, unigram_f1
from synthctx.schema import ArtifactError
from synthctx.tasks.mdqa import load_mdqa
from synthctx.tasks.musique import load_musique, load_musique_files
from synthctx.tasks.summhay import load_summhay, load_summhay_files

RAW = FIXTURES / "raw"
MDQA = RAW / "mdqa" / "nq-open-small.jsonl"
MUSIQUE_JSONL = RAW / "musique" / "musique_ans_small.jsonl"
MUSIQUE_ARRAY = RAW / "musique" / "musique_ans_small_array.json"
SUMMHAY = [RAW / "summhay" / f"topic_small{i}.json" for i in (1, 2, 3)]


# ----------------------------------------------------------------- text helpers


def test_normalize_and_match():
    assert normalize_answer("The  U.S. Army!") == "us army"
    assert answer_matches("herman melville", ["Herman Melville"])
    assert not answer_matches("Melville", ["Herman Melville"])


def test_find_answer_spans_respects_word_boundaries():
    text = "In 2011 there were 11 players; America and American teams."
    assert [text[a:b] for a, b in find_answer_spans(text, ["11", "America"])] == ["11", "America"]
    assert find_answer_spans("the US and us", ["US"]) == [(4, 6), (11, 13)]


def test_split_sentences_offsets():
    text = 'He said "Go." Then he left. U.S. troops won 3.5 games!\n\nNew para.'
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == ['He said "Go."', "Then he left.", "U.S. troops won 3.5 games!", "New para."]


def test_unigram_f1():
    assert unigram_f1("the cat sat", "cat sat") == 1.0
    assert unigram_f1("a dog", "cat") == 0.0


# ----------------------------------------------------------------- MDQA


def test_load_mdqa_values():
    records = load_mdqa(MDQA)
    assert [r.record_id for r in records] == [f"mdqa-{i:05d}" for i in range(7)]
    first = records[0]
    assert first.question == "who wrote the novel moby dick"
    assert first.answers == ("Herman Melville",)
    assert first.gold.title == "Moby-Dick"
    assert [d.source_id for d in first.distractors] == ["9000", "9001", "9002", "9003"]


def test_load_mdqa_gzip(tmp_path):
    gz = tmp_path / "x.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(MDQA.read_text())
    assert len(load_mdqa(gz)) == 7


def _mdqa_lines():
    return [json.loads(line) for line in MDQA.read_text().splitlines()]


def _write_lines(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_mdqa_bad_json_line(tmp_path):
    lines = MDQA.read_text().splitlines()
    lines[2] = lines[2][:40]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArtifactError, match=r"bad\.jsonl: line 3: invalid JSON"):
        load_mdqa(path)


def test_mdqa_missing_field(tmp_path):
    records = _mdqa_lines()
    del records[1]["answers"]
    with pytest.raises(ArtifactError, match=r"missing\.jsonl: line 2: field 'answers' is missing"):
        load_mdqa(_write_lines(tmp_path / "missing.jsonl", records))


def test_mdqa_empty_documents(tmp_path):
    records = _mdqa_lines()
    records[3]["ctxs"] = []
    with pytest.raises(ArtifactError, match=r"line 4: field 'ctxs' is empty"):
        load_mdqa(_write_lines(tmp_path / "empty.jsonl", records))


def test_mdqa_answer_not_in_gold(tmp_path):
    records = _mdqa_lines()
    records[0]["answers"] = ["Charles Dickens"]
    with pytest.raises(ArtifactError, match=r"noanswer\.jsonl: line 1: field 'answers'.*gold passage"):
        load_mdqa(_write_lines(tmp_path / "noanswer.jsonl", records))


def test_mdqa_no_gold(tmp_path):
    records = _mdqa_lines()
    records[0]["ctxs"][0]["isgold"] = False
    records[0]["ctxs"][0]["hasanswer"] = False
    with pytest.raises(ArtifactError, match=r"line 1: field 'ctxs' has no passage with isgold"):
        load_mdqa(_write_lines(tmp_path / "nogold.jsonl", records))


def test_mdqa_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_mdqa(tmp_path / "absent.jsonl.gz")


# ----------------------------------------------------------------- MuSiQue


def test_load_musique_jsonl_and_array():
    jsonl = load_musique(MUSIQUE_JSONL)
    array = load_musique(MUSIQUE_ARRAY)
    assert [r.record_id for r in jsonl] == ["3hop1__101_102_103", "3hop2__201_202_203", "2hop__301_302", "3hop1__401_402_403"]
    assert [r.hops for r in jsonl] == [3, 3, 2, 3]
    assert [r.record_id for r in array] == ["3hop1__501_502_503", "4hop1__601_602_603_604"]
    first = jsonl[0]
    assert first.answer == "Oskar Brandt" and first.aliases == ("O. Brandt",)
    assert first.supporting == (0, 3, 5)
    assert [h.answer for h in first.decomposition] == ["Mara Quill", "Lumen X2", "Oskar Brandt"]
    assert [h.support_idx for h in first.decomposition] == [0, 3, 5]
    # the single-hop question ids tie composed questions together for the split
    assert [h.hop_id for h in first.decomposition] == ["101", "102", "103"]
    assert len(load_musique_files([MUSIQUE_JSONL, MUSIQUE_ARRAY])) == 6


def test_musique_missing_sub_question_id(tmp_path):
    records = json.loads(MUSIQUE_ARRAY.read_text())
    del records[0]["question_decomposition"][1]["id"]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ArtifactError, match=r"record 0 \(id 3hop1__501_502_503\): question_decomposition\[1\]: "
                                            r"field 'id' is missing"):
        load_musique(path)


def test_musique_array_with_leading_whitespace(tmp_path):
    path = tmp_path / "spaced.json"
    path.write_text("\n\n   " + MUSIQUE_ARRAY.read_text())
    assert len(load_musique(path)) == 2


def test_musique_missing_paragraph_text(tmp_path):
    records = json.loads(MUSIQUE_ARRAY.read_text())
    del records[1]["paragraphs"][2]["paragraph_text"]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(records))
    with pytest.raises(ArtifactError, match=r"arr\.json: record 1 \(id 4hop1__601_602_603_604\): paragraphs\[2\]: field 'paragraph_text' is missing"):
        load_musique(path)


def test_musique_bad_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = MUSIQUE_JSONL.read_text().splitlines()
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ArtifactError, match=r"bad\.jsonl: line 2: invalid JSON"):
        load_musique(path)


def test_musique_empty_paragraphs_and_duplicate_ids(tmp_path):
    records = [json.loads(line) for line in MUSIQUE_JSONL.read_text().splitlines()]
    records[1]["paragraphs"] = []
    path = _write_lines(tmp_path / "m.jsonl", records)
    with pytest.raises(ArtifactError, match=r"line 2 \(id 3hop2__201_202_203\): field 'paragraphs' is empty"):
        load_musique(path)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(MUSIQUE_JSONL, copy)
    with pytest.raises(ArtifactError, match="field 'id' also occurs"):
        load_musique_files([MUSIQUE_JSONL, copy])


# ----------------------------------------------------------------- SummHay


def test_load_summhay_values():
    haystacks = load_summhay_files(SUMMHAY)
    h1 = haystacks[0]
    assert h1.topic_id == "topic001"
    assert [s.query for s in h1.subtopics] == ["How did the gardens change food production?", "What support did the city give?"]
    assert [i.insight_id for s in h1.subtopics for i in s.insights] == ["g1", "g2", "g3"]
    assert len(h1.documents) == 8
    assert [d.position for d in h1.documents] == list(range(1, 9))
    assert [d.position for d in h1.documents if "g1" in d.insights] == [1, 2, 7]


def _summhay_raw():
    return json.loads(SUMMHAY[0].read_text())


def test_summhay_empty_documents(tmp_path):
    raw = _summhay_raw()
    raw["documents"] = []
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"t\.json \(topic topic001\): field 'documents' is empty"):
        load_summhay(path)


def test_summhay_missing_insights_included(tmp_path):
    raw = _summhay_raw()
    del raw["documents"][3]["insights_included"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"documents\[3\]: field 'insights_included' is missing"):
        load_summhay(path)


def test_summhay_missing_query_and_bad_json(tmp_path):
    raw = _summhay_raw()
    del raw["subtopics"][1]["query"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"subtopics\[1\]: field 'query' is missing"):
        load_summhay(path)
    path.write_text('{"topic_id": "x",\n "subtopics": [}')
    with pytest.raises(ArtifactError, match=r"t\.json: line 2: invalid JSON"):
        load_summhay(path)
