"""What the heuristics need to know about languages and scripts, as data.

Gopher's thresholds were set on English. FineWeb-2 re-tuned every filter per language; here a
language says how its text maps onto the English-calibrated thresholds instead (words per
English word, word length relative to English, a stopword list), so one set of thresholds serves
every language, and a language without an entry is judged by what its script says.

Scripts are read from the text itself, so a document the language-ID model gets wrong (it knows
28 languages) is still segmented and judged by the script it is written in.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

ISO_639_1 = frozenset(
    "aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy "
    "da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy "
    "hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li "
    "ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa "
    "pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th "
    "ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu".split()
)
NO_LANGUAGE = "zxx"
# Codes people write for a language that are not its ISO 639-1 code (countries, ISO 639-3).
_LIKELY_MEANT = {
    "jp": "ja", "jpn": "ja", "cn": "zh", "zho": "zh", "chi": "zh", "kr": "ko", "kor": "ko",
    "gr": "el", "ua": "uk", "cz": "cs", "dk": "da", "rus": "ru", "eng": "en", "hin": "hi",
    "ara": "ar", "per": "fa", "fas": "fa", "ger": "de", "deu": "de", "fre": "fr", "fra": "fr",
}


def unknown_language_message(code: str) -> str:
    """Why ``code`` is not accepted as a language, and what to write instead."""
    hint = f" (did you mean '{_LIKELY_MEANT[code.lower()]}'?)" if code.lower() in _LIKELY_MEANT else ""
    return f"unknown language code '{code}'{hint}: use an ISO 639-1 code such as 'ja', 'pt' or 'zh', or 'zxx'"


# Script ids; a document's script is the one most of its letters are written in.
OTHER, LATIN, GREEK, CYRILLIC, ARMENIAN, HEBREW, ARABIC, DEVANAGARI, BENGALI, INDIC, THAI, LAO = range(12)
TIBETAN, MYANMAR, GEORGIAN, HANGUL, ETHIOPIC, KHMER, HAN_KANA = range(12, 19)
N_SCRIPTS = 19
NO_SPACE_SCRIPTS = frozenset({THAI, LAO, TIBETAN, MYANMAR, KHMER, HAN_KANA})
_SCRIPT_RANGES = (
    (0x0041, 0x024F, LATIN), (0x1E00, 0x1EFF, LATIN), (0xFF21, 0xFF5A, LATIN),
    (0x0370, 0x03FF, GREEK), (0x1F00, 0x1FFF, GREEK),
    (0x0400, 0x052F, CYRILLIC), (0x0530, 0x058F, ARMENIAN), (0x0590, 0x05FF, HEBREW),
    (0x0600, 0x06FF, ARABIC), (0x0750, 0x077F, ARABIC), (0xFB50, 0xFDFF, ARABIC), (0xFE70, 0xFEFF, ARABIC),
    (0x0900, 0x097F, DEVANAGARI), (0x0980, 0x09FF, BENGALI), (0x0A00, 0x0DFF, INDIC),
    (0x0E00, 0x0E7F, THAI), (0x0E80, 0x0EFF, LAO), (0x0F00, 0x0FFF, TIBETAN), (0x1000, 0x109F, MYANMAR),
    (0x10A0, 0x10FF, GEORGIAN), (0x1100, 0x11FF, HANGUL), (0x3130, 0x318F, HANGUL), (0xAC00, 0xD7AF, HANGUL),
    (0x1200, 0x139F, ETHIOPIC), (0x1780, 0x17FF, KHMER), (0x19E0, 0x19FF, KHMER),
    (0x2E80, 0x2FDF, HAN_KANA), (0x3005, 0x3007, HAN_KANA), (0x3040, 0x31FF, HAN_KANA),
    (0x3400, 0x4DBF, HAN_KANA), (0x4E00, 0x9FFF, HAN_KANA), (0xF900, 0xFAFF, HAN_KANA),
    (0xFF66, 0xFF9F, HAN_KANA), (0x1B000, 0x1B16F, HAN_KANA), (0x20000, 0x3FFFF, HAN_KANA),
)  # fmt: skip


@lru_cache(maxsize=1)
def script_table() -> np.ndarray:
    """Script id per code point (``OTHER`` outside the listed ranges)."""
    table = np.full(0x110000, OTHER, dtype=np.uint8)
    for low, high, script in _SCRIPT_RANGES:
        table[low : high + 1] = script
    return table


def script_of_words(words: list[str]) -> int:
    """The script most letters of ``words`` are written in (the script of a stopword list)."""
    letters = [script_table()[ord(char)] for word in words for char in word if char.isalpha()]
    return int(np.bincount(letters, minlength=N_SCRIPTS).argmax()) if letters else OTHER


# How text of a language maps onto English-calibrated thresholds. Figures are typical values for
# running text (translations of the same content): words_per_english_word is how many segmented
# units carry what one English word does (no articles in Slavic; clitics joined in Arabic;
# agglutination in Finnish or Turkish; one character per unit in no-space scripts), and
# word_length is mean characters per word relative to English (about 4.8).
SLAVIC_BALTIC = {"words_per_english_word": 0.8, "word_length": 1.25}
AGGLUTINATIVE = {"words_per_english_word": 0.7, "word_length": 1.5}
SEMITIC = {"words_per_english_word": 0.8, "word_length": 1.0}
INDO_IRANIAN = {"words_per_english_word": 1.1, "word_length": 0.9}
GERMANIC_COMPOUNDING = {"words_per_english_word": 0.9, "word_length": 1.2}
_FAMILY_OF = {
    **dict.fromkeys("ru uk be bg sr hr bs mk sl pl cs sk lt lv".split(), SLAVIC_BALTIC),
    **dict.fromkeys("fi et hu tr az kk uz ky tk tt ba ta te ml kn eu ka".split(), AGGLUTINATIVE),
    **dict.fromkeys("ar he mt".split(), SEMITIC),
    **dict.fromkeys("fa ur hi mr ne bn gu pa ps ku".split(), INDO_IRANIAN),
    **dict.fromkeys("de nl sv da nb nn no is".split(), GERMANIC_COMPOUNDING),
    "ko": {"words_per_english_word": 0.65, "word_length": 0.65},  # spaced units join particles; 3 syllables
    "vi": {"words_per_english_word": 1.3, "word_length": 0.75},  # one syllable per space-separated unit
    "el": {"words_per_english_word": 1.0, "word_length": 1.2},
    # No-space scripts: a unit is one character, so word length says nothing (None: rules off).
    "zh": {"words_per_english_word": 1.6, "word_length": None},
    "ja": {"words_per_english_word": 2.2, "word_length": None},
    **dict.fromkeys("th lo km my".split(), {"words_per_english_word": 3.5, "word_length": None}),
    **dict.fromkeys("bo dz".split(), {"words_per_english_word": 3.0, "word_length": None}),
}
UNSPACED_WORDS_PER_ENGLISH_WORD = 2.0  # no-space text whose language has no rules of its own

# The most frequent function words of each language (Gopher's eight for English). Words are
# segmented as ``steps.words`` does, so Chinese and Japanese lists hold single characters.
STOPWORDS = {
    "en": "the be to of and that have with",
    "de": "der die und in den von zu das mit sich des auf für ist nicht",
    "fr": "de la le et les des en un du une que est pour qui dans",
    "es": "de la que el en y a los del se las por un para con",
    "it": "di e il la che in a per un del è della non con una",
    "pt": "de a o que e do da em um para é com não uma os",
    "nl": "de en van het een in is dat op te zijn met voor niet",
    "ru": "и в не на что с по это как для из к а о от",
    "ja": "の に は を た が で て と し れ さ る な",
    "zh": "的 是 在 了 和 有 不 这 中 为 一 个 以 上",
}


def default_language_rules() -> dict[str, dict]:
    """Built-in rules per language: family figures plus the stopword list where there is one."""
    rules: dict[str, dict] = {code: dict(family) for code, family in _FAMILY_OF.items()}
    for code, words in STOPWORDS.items():
        rules.setdefault(code, {})["stopwords"] = words.split()
    return rules
