"""The bundled Shakespeare corpus and the folder loader."""

import dataclasses
import re
from collections import Counter

import pytest

from bertlab.data import Document, load_corpus

COMEDIES = ["The Tempest", "The Two Gentlemen of Verona", "The Merry Wives of Windsor",
            "Measure for Measure", "The Comedy of Errors", "Much Ado About Nothing",
            "Love's Labour's Lost", "A Midsummer Night's Dream", "The Merchant of Venice",
            "As You Like It", "The Taming of the Shrew", "All's Well That Ends Well",
            "Twelfth Night", "The Winter's Tale"]
HISTORIES = ["King John", "Richard II", "Henry IV, Part 1", "Henry IV, Part 2", "Henry V",
             "Henry VI, Part 1", "Henry VI, Part 2", "Henry VI, Part 3", "Richard III",
             "Henry VIII"]
TRAGEDIES = ["Troilus and Cressida", "Coriolanus", "Titus Andronicus", "Romeo and Juliet",
             "Timon of Athens", "Julius Caesar", "Macbeth", "Hamlet", "King Lear", "Othello",
             "Antony and Cleopatra", "Cymbeline"]
POEMS = ["The Sonnets", "A Lover's Complaint", "The Rape of Lucrece", "The Passionate Pilgrim",
         "The Phoenix and the Turtle"]
FIRST_FOLIO = COMEDIES + HISTORIES + TRAGEDIES  # its 36 plays, in its order
BOILERPLATE = [r"(?i)gutenberg", r"(?i)\be-?text\b", r"(?i)\be-?book\b", r"(?i)small print",
               r"START OF TH", r"END OF TH", r"(?m)^End of\b", r"(?m)^THE END$", r"\*\*\*",
               r"(?i)copyright", r"(?i)http|www\.", r"(?i)public domain", r"@@"]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def works(corpus):
    return {doc.title: doc for doc in corpus}


def test_every_work_once_in_folio_order(corpus):
    assert [doc.title for doc in corpus] == FIRST_FOLIO + ["Pericles"] + POEMS
    assert len(FIRST_FOLIO) == 36


def test_one_edition_only(corpus):
    # the First Folio texts head their scenes "Actus Primus. Scoena Prima." and spell "Vnto"
    for doc in corpus:
        assert not re.search(r"Actus|Sc(o)?ena|\bVnto\b|\bHeauen", doc.text), doc.title


def test_genres(works):
    assert works["Hamlet"].genre == "tragedy"
    assert works["Henry V"].genre == "history"
    assert works["Twelfth Night"].genre == "comedy"
    assert works["The Winter's Tale"].genre == "comedy"  # the Folio's grouping
    assert works["Cymbeline"].genre == "tragedy"
    assert Counter(doc.genre for doc in works.values()) == {
        "comedy": 15, "history": 10, "tragedy": 12, "poetry": 5}


@pytest.mark.parametrize("pattern", BOILERPLATE)
def test_no_boilerplate(corpus, pattern):
    hits = [(doc.title, m.group()) for doc in corpus for m in re.finditer(pattern, doc.text)]
    assert hits == []


def test_size(corpus):
    characters = sum(len(doc.text) for doc in corpus)
    words = sum(len(doc.text.split()) for doc in corpus)
    assert 5_000_000 < characters < 5_070_000
    assert 900_000 < words < 910_000


def test_whitespace_is_normalized(corpus):
    for doc in corpus:
        assert "\n\n\n" not in doc.text and "  " not in doc.text and "\t" not in doc.text
        assert not re.search(r"(?m)^ | $", doc.text), doc.title


def test_plays_have_persons_acts_scenes_and_speeches(works):
    for title in FIRST_FOLIO + ["Pericles"]:
        play = works[title]
        assert len(play.persons) >= 15, title
        keys = [(s.act, s.scene) for s in play.scenes]
        assert keys == sorted(set(keys)), title  # in order, none twice
        acts = {s.act for s in play.scenes} - {0}
        assert acts == ({1, 2, 5} if title == "Cymbeline" else {1, 2, 3, 4, 5}), title
        speakers = Counter(p.speaker for s in play.scenes for p in s.speeches)
        assert sum(speakers.values()) > 400, title
        for scene in play.scenes:
            assert scene.heading
            for speech in scene.speeches:
                assert speech.speaker and speech.lines, (title, scene.heading)
                assert not any(re.search(r"[\[\]{}]", line) for line in speech.lines)
            for direction in scene.directions:
                assert direction.text and 0 <= direction.before_speech <= len(scene.speeches)


def test_poems_have_no_play_structure(works):
    for title in POEMS:
        assert works[title].genre == "poetry"
        assert works[title].persons == () and works[title].scenes == ()


def test_hamlet(works):
    hamlet = works["Hamlet"]
    assert hamlet.persons[:4] == ("Claudius", "Hamlet", "Polonius", "Horatio")
    assert {"Ophelia", "Gertrude", "Bernardo", "Francisco"} <= set(hamlet.persons)
    assert [sum(s.act == a for s in hamlet.scenes) for a in range(1, 6)] == [5, 2, 4, 7, 2]
    first = hamlet.scenes[0]
    assert (first.act, first.scene) == (1, 1)
    assert first.heading == "Scene I. Elsinore. A platform before the Castle."
    assert first.speeches[0].speaker == "Ber" and first.speeches[0].lines == ("Who's there?",)
    assert first.speeches[1].speaker == "Fran"
    assert first.directions[0].text == "Francisco at his post. Enter to him Bernardo."
    ghost = next(d for d in first.directions if d.text == "Enter Ghost, armed.")
    assert first.speeches[ghost.before_speech].lines[0] == \
        "In the same figure, like the king that's dead."
    nunnery = next(s for s in hamlet.scenes if (s.act, s.scene) == (3, 1))
    [to_be] = [p for p in nunnery.speeches if p.lines[0].startswith("To be, or not to be")]
    assert to_be.speaker == "Ham"
    assert Counter(p.speaker for s in hamlet.scenes for p in s.speeches).most_common(1) == \
        [("Ham", 358)]


def test_speaker_tags_follow_each_play(works):
    # capitals, abbreviations, full names: each play keeps its own tags
    othello = Counter(p.speaker for s in works["Othello"].scenes for p in s.speeches)
    assert {"OTHELLO", "IAGO", "DESDEMONA"} <= set(othello)
    romeo = Counter(p.speaker for s in works["Romeo and Juliet"].scenes for p in s.speeches)
    assert {"Romeo", "Juliet", "Nurse", "Lady Capulet"} <= set(romeo)
    errors = Counter(p.speaker for s in works["The Comedy of Errors"].scenes for p in s.speeches)
    assert {"DROMIO OF SYRACUSE", "ANTIPHOLUS OF EPHESUS"} <= set(errors)


def test_prologues_inductions_and_untagged_speakers(works):
    henry_v = works["Henry V"]
    assert (henry_v.scenes[0].act, henry_v.scenes[0].scene) == (0, 0)
    assert henry_v.scenes[0].speeches[0].speaker == "CHORUS"
    assert henry_v.scenes[0].speeches[0].lines[0].startswith("O for a Muse of fire")
    shrew = works["The Taming of the Shrew"]
    assert [(s.act, s.scene) for s in shrew.scenes[:3]] == [(0, 1), (0, 2), (1, 1)]
    gower = works["Pericles"].scenes[0].speeches[0]  # "[Enter GOWER.]" and no tag
    assert gower.speaker == "GOWER" and gower.lines[0] == "To sing a song that old was sung,"
    epilogue = works["The Tempest"].scenes[-1]  # "[Spoken by PROSPERO]"
    assert epilogue.heading == "EPILOGUE" and epilogue.speeches[0].speaker == "PROSPERO"


def test_documents_are_frozen(corpus):
    with pytest.raises(dataclasses.FrozenInstanceError):
        corpus[0].title = "Titus"


# Your own text: a folder of .txt files

def test_folder_of_text_files(tmp_path):
    (tmp_path / "b.txt").write_text("Second  document.\r\n\r\n\r\n\r\nNew paragraph.  \n")
    (tmp_path / "a.txt").write_text("  First document,\nsecond line.\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("not a .txt file")
    docs = load_corpus(tmp_path)
    assert docs == [Document("a", None, "First document,\nsecond line."),
                    Document("b", None, "Second document.\n\nNew paragraph.")]
    assert docs[0].persons == () and docs[0].scenes == ()


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        load_corpus(tmp_path / "nowhere")


def test_a_file_of_another_kind_is_a_clear_error(tmp_path):
    (tmp_path / "a.md").write_text("text")
    with pytest.raises(ValueError, match="not a folder, a .txt file or a .jsonl file"):
        load_corpus(tmp_path / "a.md")


def test_empty_folder(tmp_path):
    (tmp_path / "notes.md").write_text("text")
    with pytest.raises(ValueError, match="no .txt files"):
        load_corpus(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "b.txt").write_text(" \n\n \n")
    with pytest.raises(ValueError, match=r"b\.txt is empty"):
        load_corpus(tmp_path)


def test_file_not_utf8(tmp_path):
    (tmp_path / "latin.txt").write_bytes("Café naïve".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.txt is not UTF-8.*convert it"):
        load_corpus(tmp_path)
