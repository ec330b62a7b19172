"""Hand-worked cases for the task metrics (SQuAD F1, best_subspan_em, SummHay citation F1)."""

import numpy as np
import pytest

from synthctx.evaluate.metrics import (
    best_subspan_em,
    citation_scores,
    normalize_answer,
    parse_citations,
    score_prediction,
    token_f1,
)


def ex(answers=(), gold=()):
    return {"example_id": "x", "answers": list(answers), "gold_doc_ids": list(gold), "target": ""}


def test_normalize_answer_punctuation_articles_case_space():
    assert normalize_answer("  The  Eiffel-Tower, Paris! ") == "eiffeltower paris"
    assert normalize_answer("An apple a day") == "apple day"
    # Articles only as whole words: "theory" keeps its "the".
    assert normalize_answer("theory of a thing") == "theory of thing"


def test_token_f1_hand_worked():
    # pred tokens {barack, obama, was}; gold {barack, obama}: P=2/3, R=1, F1=0.8
    assert token_f1("Barack Obama was", "barack obama") == pytest.approx(0.8)
    assert token_f1("Obama", "Barack Obama") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("Paris", "London") == 0.0
    # Both sides normalize to nothing -> 1; one side only -> 0 (MuSiQue's rule).
    assert token_f1("the", "a") == 1.0
    assert token_f1("", "Paris") == 0.0


def test_mdqa_score_max_over_answers_and_subspan():
    example = ex(answers=["Barack Obama", "Obama"])
    score, m = score_prediction("mdqa", "Obama.", example)
    assert score == 1.0 and m["em"] == 1.0 and m["best_subspan_em"] == 1.0
    score, m = score_prediction("mdqa", "It was Barack Obama, the president", example)
    # Best answer "barack obama": pred tokens 6 -> {it,was,barack,obama,president} after article removal
    # tokens: it was barack obama president (5); P=2/5 R=1 F1=4/7
    assert score == pytest.approx(4 / 7)
    assert m["best_subspan_em"] == 1.0 and m["em"] == 0.0


def test_best_subspan_em_first_line_only():
    assert best_subspan_em("no idea\nObama", ["Obama"]) == 0.0
    assert best_subspan_em("The answer: OBAMA!", ["obama"]) == 1.0


def test_best_subspan_em_word_boundaries_of_regex():
    # Lost in the Middle drops articles with the `regex` package, where a combining mark is a
    # word character. Decomposed (NFD) "Año" = "An" + U+0303 + "o": `re` sees a word "an"
    # before the mark and drops it as an article, leaving "\u0303o", which "El Niño" contains.
    ano, nino = "An\u0303o", "El Nin\u0303o"
    assert best_subspan_em(nino, [ano]) == 0.0
    assert best_subspan_em(f"{ano} Nuevo", [ano]) == 1.0
    # F1 and EM keep SQuAD's `re` rules.
    assert normalize_answer(ano) == "\u0303o"


def test_empty_prediction_scores_zero():
    for task in ("mdqa", "musique"):
        score, m = score_prediction(task, "", ex(answers=["Paris"]))
        assert score == 0.0 and m["em"] == 0.0
    score, m = score_prediction("summhay", "", ex(gold=["2"]))
    assert score == 0.0 and m["citation_precision"] == 0.0 and m["citation_recall"] == 0.0


def test_musique_aliases_and_numpy_rows():
    example = {"example_id": "m", "answers": np.array(["United States", "USA", "U.S."]), "target": "United States"}
    score, m = score_prediction("musique", "U.S.", example)
    # "U.S." normalizes to "us" and equals the alias "U.S." -> EM 1
    assert score == 1.0 and m["em"] == 1.0
    score, _ = score_prediction("musique", "usa", example)
    assert score == 1.0


def test_parse_citations_group_and_duplicates():
    assert parse_citations("[3][7]") == {3, 7}
    assert parse_citations("[3, 7] and again [7]") == {3, 7}
    assert parse_citations("[3,7][12]") == {3, 7, 12}
    assert parse_citations("[a] (3) 4") == set()
    # Upstream's group is digits, commas and plain spaces: no newline, tab or no-break space.
    assert parse_citations("[3 7]") == {3, 7}
    assert parse_citations("[3\n7] [3\t7] [3\u00a07] [\n5]") == set()
    assert parse_citations("[3,\n7] [2]") == {2}


def test_citation_scores_hand_worked():
    # cited {2,5,9} vs gold {2,5,6,8}: P=2/3 R=2/4 F1=2*(2/3)(1/2)/(7/6)=4/7
    m = citation_scores("[2][5][9][2]", ["2", "5", "6", "8"])
    assert m["citation_precision"] == pytest.approx(2 / 3)
    assert m["citation_recall"] == pytest.approx(0.5)
    assert m["citation_f1"] == pytest.approx(4 / 7)
    assert m["n_cited"] == 3.0
    score, _ = score_prediction("summhay", "[3, 7]", ex(gold=np.array(["7", "3"])))
    assert score == 1.0
    score, _ = score_prediction("summhay", "[1]", ex(gold=["7"]))
    assert score == 0.0


def test_unknown_task_and_missing_answers_raise():
    with pytest.raises(ValueError):
        score_prediction("nope", "x", ex(answers=["a"]))
    with pytest.raises(ValueError):
        score_prediction("mdqa", "x", {"example_id": "e", "answers": [], "target": ""})


def test_answer_recall_is_rouge1_recall_of_the_best_answer():
    from synthctx.evaluate.metrics import score_prediction, token_recall

    assert token_recall("The capital is New York City.", "new york") == 1.0
    assert token_recall("York", "New York") == 0.5
    assert token_recall("", "Paris") == 0.0
    ex = {"answers": ["George Washington", "Washington"], "example_id": "e"}
    _, metrics = score_prediction("musique", "It was Martha Washington", ex)
    assert metrics["answer_recall"] == 1.0  # "Washington" fully recalled
