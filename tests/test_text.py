"""Hashtags and @mentions as the parser reads them (domain/text.py): Unicode-aware,
normalised with NFKC and case folding, in order of first appearance."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.text import (
    MAX_HASHTAG,
    MAX_TEXT,
    hashtag_name,
    hashtags_of,
    is_word_char,
    mentions_of,
)

ZWNJ, ZWJ = "\u200c", "\u200d"


def test_the_issue_examples():
    # #CAFÉ and #café are one tag; #Cafe (no accent) is another.
    assert hashtags_of("#café #日本 #Ünïcödé #Cafe #CAFÉ") == ["café", "日本", "ünïcödé", "cafe"]


@pytest.mark.parametrize(
    ("caption", "tags"),
    [
        ("Sun #Sun #sun #sea", ["sun", "sea"]),
        ("a#b is no tag, nor is mail#box", []),
        ("#tag#other: the second # sits inside a word", ["tag"]),
        ("end of sentence #tag.", ["tag"]),
        ("(#paren) [#bracket] #comma, #excl!", ["paren", "bracket", "comma", "excl"]),
        ("#snake_case #123 #_ #_1 #2024summer", ["snake_case", "2024summer"]),
        # At least one letter, as on Instagram: numbers and HTML character references
        # are no tags.
        ("#8 and &#39; and &#x27; and #٣", []),
        # The zero-width non-joiner and joiner belong inside a tag (Persian, Sinhala).
        (f"#می{ZWNJ}خواهم today", [f"می{ZWNJ}خواهم"]),
        (f"#ශ්{ZWJ}රී", [f"ශ්{ZWJ}රී"]),
        # ...but not first, and a trailing one joins nothing and is dropped.
        (f"#{ZWNJ}abc #abc{ZWNJ} ok", ["abc"]),
        # A combining mark cannot start a tag.
        ("#\u0301abc", []),
        ("# alone, #, ## and #!", []),
        ("##double", ["double"]),
        ("#हिन्दी keeps its vowel signs", ["हिन्दी"]),
        ("full-width \uff03東京 is a tag", ["東京"]),
        ("#Straße is #STRASSE", ["strasse"]),
        ("#ﬁre (a ligature) #Ⅻ (a numeral)", ["fire", "xii"]),
        (None, []),
        ("", []),
    ],
)
def test_hashtags(caption: str | None, tags: list[str]):
    assert hashtags_of(caption) == tags


def test_decomposed_and_composed_accents_are_one_tag():
    composed = "#Ünïcödé"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert hashtags_of(decomposed) == hashtags_of(composed) == ["ünïcödé"]


def test_a_tag_longer_than_100_characters_is_no_tag():
    assert hashtags_of("#" + "a" * MAX_HASHTAG) == ["a" * MAX_HASHTAG]
    assert hashtags_of("#" + "a" * (MAX_HASHTAG + 1)) == []


def test_only_the_first_2200_characters_are_scanned():
    # A caption or comment is at most 2,200 characters; a longer text is not read past.
    padding = "x" * (MAX_TEXT - len("#first "))
    assert hashtags_of(f"#first {padding} #after @after") == ["first"]
    assert mentions_of(f"@first {padding} @after_it") == ["first"]
    assert hashtag_name("#" + "a" * 10_000_000) is None


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("#Café", "café"),
        ("CAFÉ", "café"),
        ("  #café ", "café"),
        ("\uff03日本", "日本"),  # the full-width number sign
        ("Cafe", "cafe"),
        ("", None),
        ("#", None),
        ("##café", None),
        ("café!", None),
        ("two words", None),
        ("a" * (MAX_HASHTAG + 1), None),
        (f"#می{ZWNJ}خواهم", f"می{ZWNJ}خواهم"),
        ("#8", None),
        ("#_", None),
        ("\u0301abc", None),
        (f"{ZWJ}abc", None),
        # Not text at all (JSON can carry both): never a tag, never sent to SQL.
        ("caf\x00é", None),
        ("\x00", None),
        ("caf\ud800", None),
        ("\ud800", None),
    ],
)
def test_hashtag_names_as_typed(typed: str, name: str | None):
    assert hashtag_name(typed) == name


@pytest.mark.parametrize(
    ("text", "usernames"),
    [
        ("thanks @Alice and @bob.smith.", ["alice", "bob.smith"]),
        ("@alice @ALICE @alice!", ["alice"]),
        ("mail carol@example.com is no mention", []),
        ("@al is too short, @" + "x" * 31 + " too long", []),
        ("(@dave) @erin, @frank_1?", ["dave", "erin", "frank_1"]),
        ("@gustavé runs on with a letter no username has", []),
        ("@@heidi", ["heidi"]),
        ("full-width \uff20ivan", ["ivan"]),
        (None, []),
    ],
)
def test_mentions(text: str | None, usernames: list[str]):
    assert mentions_of(text) == usernames


@given(st.text())
def test_tags_are_normalised_unique_words(text: str):
    tags = hashtags_of(text)
    assert len(tags) == len(set(tags))
    for tag in tags:
        assert 1 <= len(tag) <= MAX_HASHTAG
        assert hashtags_of("#" + tag) == [tag]  # normalising twice changes nothing
        normalised = unicodedata.normalize("NFKC", tag)
        assert all(is_word_char(char) or char in ZWNJ + ZWJ for char in normalised)
        assert any(char.isalpha() for char in tag)


@given(
    st.lists(
        st.text(
            alphabet=st.characters(categories=["L", "N", "M"], include_characters=ZWNJ + ZWJ),
            min_size=1,
            max_size=40,
        ),
        max_size=20,
    )
)
def test_every_tag_written_is_found_once_in_order(words: list[str]):
    caption = " ".join("#" + word for word in words)
    expected = list(dict.fromkeys(hashtag_name(word) for word in words))
    assert hashtags_of(caption) == [tag for tag in expected if tag is not None]


@given(st.text())
def test_mentions_are_valid_usernames(text: str):
    for username in mentions_of(text):
        assert mentions_of("@" + username) == [username]
