"""Structural signals of a document that say what kind of text it is, whatever its source.

A bag-of-words model learns the sources it was trained on; these signals describe the *shape*
of text, which carries over to sources never seen: code syntax (line endings, keywords at line
starts, operators, identifiers), math notation (LaTeX, equations, digit and operator density),
question-answer and dialogue structure (question lines, Q:/A: and speaker turns), citations and
references, prose (sentences, words), lists, paths and licence boilerplate.

Cost matters: curation computes them for every document. The whole batch is one UTF-8 byte
array; character classes, line starts and ends and adjacent-character patterns are counted with
numpy for all documents at once, and a few regular expressions run once over the joined batch.
pygments' ``guess_lexer`` was measured and left out: 6.5 ms per document (over 10x the whole
pipeline's per-document cost) and it names BASIC or SQL dialects for plain prose.
"""

from __future__ import annotations

import re

import numpy as np

# The prefix of each document the signals read (characters).
SIGNAL_CHARS = 2000
# Separates documents in the joined batch: a newline, so line rules see each document start.
_SEP = "\n\x00\n"
# Full-width and non-Latin punctuation that means the same as its ASCII form.
_PUNCT_FOLD = str.maketrans({"？": "?", "؟": "?", "：": ":", "。": ".", "！": "!", "；": ";", "，": ","})
_FOLDED = "？؟：。！；，"

# Byte classes (ASCII); every byte >= 0x80 is OTHER (letters of other scripts, counted as text).
_CLASS_CHARS = {
    "space": " \t\r", "newline": "\n", "plus": "+", "minus": "-", "star": "*", "slash": "/", "equals": "=",
    "caret": "^", "angle": "<>", "paren": "()", "square": "[]", "curly": "{}", "semicolon": ";", "colon": ":",
    "question": "?", "bang": "!", "period": ".", "comma": ",", "quote": "\"'`", "backslash": "\\",
    "dollar": "$", "hash": "#", "underscore": "_", "pipe": "|", "at": "@", "percent": "%", "amp": "&",
}
_CLASSES = ["other", "lower", "upper", "digit", *_CLASS_CHARS]
_CLASS_ID = {name: index for index, name in enumerate(_CLASSES)}
_TABLE = np.zeros(256, dtype=np.int64)
_TABLE[ord("a") : ord("z") + 1] = _CLASS_ID["lower"]
_TABLE[ord("A") : ord("Z") + 1] = _CLASS_ID["upper"]
_TABLE[ord("0") : ord("9") + 1] = _CLASS_ID["digit"]
for _name, _chars in _CLASS_CHARS.items():
    for _char in _chars:
        _TABLE[ord(_char)] = _CLASS_ID[_name]
_N = len(_CLASSES)
_LETTER = np.zeros(_N, dtype=bool)
_LETTER[[_CLASS_ID["lower"], _CLASS_ID["upper"], _CLASS_ID["other"]]] = True
_OPERATOR = np.zeros(_N, dtype=bool)
_OPERATOR[[_CLASS_ID[name] for name in ("plus", "minus", "star", "slash", "equals", "caret", "angle")]] = True
_ARITHMETIC = np.zeros(_N, dtype=bool)
_ARITHMETIC[[_CLASS_ID[name] for name in ("plus", "star", "equals", "caret", "angle")]] = True
_BLANK = np.zeros(_N, dtype=bool)
_BLANK[[_CLASS_ID["space"], _CLASS_ID["newline"]]] = True

# Character classes whose share of all characters is a signal.
_RATIO_CLASSES = [name for name in _CLASSES if name not in ("other", "lower", "newline")]
# Classes of the last character of a non-empty line, and of the first one.
_LINE_END_CLASSES = ["semicolon", "curly", "paren", "colon", "comma", "period", "question", "digit", "lower", "upper"]
_LINE_START_CLASSES = ["space", "hash", "minus", "star", "digit", "upper", "lower", "slash", "angle", "pipe",
                       "backslash", "square", "curly", "at", "dollar", "percent", "other"]

# Line patterns run on the lowercased batch (IGNORECASE makes Python's re several times slower).
_LINE_REGEXES = {
    # Q:/A: markers and named speakers of chats and interviews, in several languages.
    "dialogue_markers": (True, re.compile(
        r"^[ \t>*#\[]*(?:q|a|question|answer|user|assistant|human|ai|bot|gpt|chatgpt|system|customer|agent|"
        r"client|support|student|teacher|interviewer|interviewee|moderator|speaker ?\d*|person ?\d*|"
        r"frage|antwort|pregunta|respuesta|réponse|domanda|risposta|pergunta|resposta|vraag|antwoord|"
        r"вопрос|ответ|问|答|問|質問|回答|질문|답변)[ \t*\])]*:", re.MULTILINE)),
    # Questions opening a line, in several languages (CJK questions end with "?", counted apart).
    "question_openers": (True, re.compile(
        r"^[^\w\n]{0,4}(?:how|what|why|when|where|which|who|can|could|does|do|is|are|should|will|would|may|"
        r"cómo|qué|por qué|comment|pourquoi|quel|quelle|est-ce|wie|was|warum|kann|come|perché|che cosa|"
        r"como|o que|porque|hoe|wat|waarom|kan|как|что|почему|можно)\b", re.MULTILINE)),
    # "Name: text" lines: speaker turns, but also "Field: value" headers.
    "label_lines": (False, re.compile(r"^[ \t]*[A-Z][\w'.-]{0,15}(?: [\w'.-]{1,15})?:[ \t]+\S", re.MULTILINE)),
    # Statements and keywords that open lines of code in common languages.
    "code_lines": (False, re.compile(
        r"^[ \t]*(?:def|class|import|from|return|if|elif|else|for|while|try|except|catch|finally|function|var|"
        r"let|const|public|private|protected|static|void|int|char|struct|package|use|my|sub|echo|export|local|"
        r"fi|done|then|end|async|await|fn|func|impl|namespace|using|template|typedef|switch|case|break|"
        r"continue|#include|#define|#if|#ifdef|#ifndef|#endif|@\w+)\b", re.MULTILINE)),
}
# Patterns counted per word: (on the lowercased batch?, pattern).
_WORD_REGEXES = {
    "latex": (False, re.compile(
        r"\\(?:frac|sum|int|sqrt|alpha|beta|gamma|delta|lambda|sigma|theta|pi|mu|left|right|begin|end|mathbb|"
        r"mathrm|cdot|times|leq|geq|infty|partial|log|exp|ldots|dots)\b|\$[^$\n]{1,80}\$")),
    "numbered_citations": (False, re.compile(r"\[\d{1,3}(?:[,–-] ?\d{1,3})*\]")),
    "author_year": (False, re.compile(r", (?:19|20)\d\d[a-z]?\)")),
    "urls": (True, re.compile(r"https?://|www\.")),
}
# Word lexicons (lowercased words of Latin and Cyrillic scripts), one count per lexicon.
_LEXICONS = {
    "math_words": "how many much calculate compute solve evaluate simplify find determine total sum product remainder "
    "divided divisible multiply multiplied times probability percent average equation equations equals derivative "
    "integral prime factor factors digit digits fraction ratio theorem lemma proof prove round nearest value "
    "let suppose integer integers polynomial",
    "academic_words": "we our propose proposed method methods results paper study analysis approach experiment "
    "experiments estimate estimator hypothesis significant observed samples distribution parameters algorithm "
    "model models respectively thus hence moreover furthermore",
    "citation_words": "et al doi arxiv proc journal conference proceedings references bibliography abstract pp vol "
    "isbn press university",
    # Function words of prose in several languages: high in any running text, absent from lists and salad.
    "function_words": "the of and to in is that for it as with was on be by this are not or from at which but have "
    "an they you he she his her their its der die das und ist nicht mit den von zu le la les et des est un une "
    "dans pour qui el los las y en que por con para il di che non per una het een van op dat niet и в не на что "
    "с по как это",
    "boilerplate_words": "copyright license licence licensed warranty warranties permission gpl lgpl apache bsd "
    "urgency closes upload maintainer changelog release released fixed bump version",
}
_LEXICON_ID = {word: index for index, words in enumerate(_LEXICONS.values()) for word in words.split()}
_WORD_RE = re.compile(r"[a-zа-яёàâçéèêëîïôûùüÿñæœäößìíòóú]+")

_PAIR_NAMES = ["number_word", "digit_op_digit", "backslash_letter", "snake_case", "camel_case", "call_paren", "code_operator",
               "sentence_start", "question_end", "blank_line", "word"]

FEATURE_NAMES: list[str] = (
    [f"char_{name}" for name in _RATIO_CLASSES]
    + [f"line_end_{name}" for name in _LINE_END_CLASSES]
    + [f"line_start_{name}" for name in _LINE_START_CLASSES]
    + ["opens_with_question", "log_chars_per_line", "log_chars_per_word", "log_words_per_punct"]
    + [f"pair_{name}" for name in _PAIR_NAMES if name != "word"]
    + [f"lines_{name}" for name in _LINE_REGEXES]
    + [f"words_{name}" for name in [*_WORD_REGEXES, *_LEXICONS]]
)


def signal_features(texts: list[str], max_chars: int = SIGNAL_CHARS) -> np.ndarray:
    """Signals of each text's first ``max_chars`` characters: shape (len(texts), len(FEATURE_NAMES)), float32.

    Counts are divided by the characters, lines or words read, so a signal means the same for a
    short and a long document.
    """
    n_docs = len(texts)
    if not n_docs:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    prefixes = [_fold(text[:max_chars]) for text in texts]
    # Every document sits between two separators; document i has id i + 1 (0 and n + 1: the ends).
    joined = _SEP + _SEP.join(prefixes) + _SEP
    data = np.frombuffer(joined.encode("utf-8", "replace"), dtype=np.uint8)
    doc_of_byte = np.cumsum(data == 0)
    inside = _inside_documents(data)
    classes = _TABLE[data]
    chars = np.maximum(np.array([len(prefix) for prefix in prefixes], dtype=np.float64), 1)
    counts = _class_counts(doc_of_byte[inside], classes[inside], n_docs, _RATIO_CLASSES)
    line_ends, line_starts, n_lines, first_question = _line_signals(data, classes, doc_of_byte, n_docs)
    pairs = _pair_signals(classes, inside, doc_of_byte, n_docs)
    words = np.maximum(pairs[:, -1], 1)
    lines = np.maximum(n_lines, 1)
    lowered = [prefix.lower() for prefix in prefixes]
    texts_at = {False: (joined, _offsets(prefixes)), True: (_SEP + _SEP.join(lowered) + _SEP, _offsets(lowered))}
    punct = counts[:, [_RATIO_CLASSES.index(name) for name in ("period", "comma", "question", "bang", "semicolon")]]
    shape = np.stack(
        [first_question, np.log1p(chars / lines), np.log1p(chars / words), np.log1p(words / (1 + punct.sum(axis=1)))],
        axis=1,
    )
    features = np.hstack([
        counts / chars[:, None],
        line_ends / lines[:, None],
        line_starts / lines[:, None],
        shape,
        pairs[:, :-1] / words[:, None],
        _regex_counts(_LINE_REGEXES, texts_at, n_docs) / lines[:, None],
        _regex_counts(_WORD_REGEXES, texts_at, n_docs) / words[:, None],
        _lexicon_counts(lowered) / words[:, None],
    ])
    return features.astype(np.float32)


def _fold(text: str) -> str:
    """Fold full-width and non-Latin punctuation to ASCII (only when there is any: translate is slow)."""
    if "\x00" in text:  # NUL separates documents in the joined batch
        text = text.replace("\x00", " ")
    return text.translate(_PUNCT_FOLD) if any(char in text for char in _FOLDED) else text


def _inside_documents(data: np.ndarray) -> np.ndarray:
    """False for the bytes of the separators between documents."""
    inside = np.ones(len(data), dtype=bool)
    nul = np.flatnonzero(data == 0)
    inside[nul] = inside[nul - 1] = inside[nul + 1] = False
    return inside


def _line_signals(
    data: np.ndarray, classes: np.ndarray, doc_of_byte: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per document: counts of non-empty lines by last and by first character class, line count,
    and whether the first non-empty line ends with a question mark."""
    newline = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], newline + 1])
    ends = np.concatenate([newline, [len(data)]])
    # Last non-blank byte of each line: strip trailing spaces by walking back over blanks.
    last = ends - 1
    for _ in range(3):
        blank = (last >= starts) & (classes[np.maximum(last, 0)] == _CLASS_ID["space"])
        last = np.where(blank, last - 1, last)
    non_empty = (last >= starts) & (data[np.minimum(starts, len(data) - 1)] != 0)
    starts, last = starts[non_empty], last[non_empty]
    docs = doc_of_byte[starts]
    end_class, start_class = classes[last], classes[starts]
    line_ends = _class_counts(docs, end_class, n_docs, _LINE_END_CLASSES)
    line_starts = _class_counts(docs, start_class, n_docs, _LINE_START_CLASSES)
    n_lines = _per_doc(docs, n_docs)
    first_of_doc = np.flatnonzero(np.diff(np.concatenate([[-1], docs])) != 0)
    # A question opens the document: its first or second non-empty line ends with "?".
    is_question = end_class == _CLASS_ID["question"]
    second = np.minimum(first_of_doc + 1, len(docs) - 1)
    second_same_doc = docs[second] == docs[first_of_doc]
    first_question = np.zeros(n_docs + 2)
    first_question[docs[first_of_doc]] = is_question[first_of_doc] | (is_question[second] & second_same_doc)
    first_question = first_question[1 : n_docs + 1]
    return line_ends, line_starts, n_lines, first_question


def _class_counts(docs: np.ndarray, classes: np.ndarray, n_docs: int, names: list[str]) -> np.ndarray:
    """Counts per document (ids 1..n) of the bytes of each class in ``names``."""
    table = np.bincount(docs * _N + classes, minlength=(n_docs + 2) * _N).reshape(n_docs + 2, _N)
    return table[1 : n_docs + 1, [_CLASS_ID[name] for name in names]].astype(np.float64)


def _per_doc(docs: np.ndarray, n_docs: int) -> np.ndarray:
    """How many of ``docs`` (ids 1..n) name each document."""
    return np.bincount(docs, minlength=n_docs + 2)[1 : n_docs + 1].astype(np.float64)


def _pair_signals(classes: np.ndarray, inside: np.ndarray, doc_of_byte: np.ndarray, n_docs: int) -> np.ndarray:
    """Adjacent-character patterns per document, in ``_PAIR_NAMES`` order (words last).

    A pattern counts only when all its bytes lie inside one document, and a word is a non-blank
    byte after a blank one or at a document start, so no count depends on the batch around it.
    """
    c0, c1 = classes[:-1], classes[1:]
    c2 = np.concatenate([classes[2:], [_CLASS_ID["newline"]]])
    both = inside[:-1] & inside[1:]
    c3 = np.concatenate([classes[3:], [_CLASS_ID["newline"]] * 2])
    three = both & np.concatenate([inside[2:], [False]])
    four = three & np.concatenate([inside[3:], [False, False]])
    cid = _CLASS_ID
    digit, letter, blank = c0 == cid["digit"], _LETTER[c0], _BLANK[c0]
    word_start = inside[1:] & ~_BLANK[c1] & (blank | ~inside[:-1])
    patterns = [
        word_start & (c1 == cid["digit"]),
        # "3+4", "x=4", "3 + 4", "x = 4": an arithmetic operator between a digit or letter and a digit
        # ("-" and "/" only with spaces around them: "2025-08-25" and "lib/x86_64" are no arithmetic).
        (three & (digit | letter) & _ARITHMETIC[c1] & (c2 == cid["digit"]))
        | (four & (digit | letter) & (c1 == cid["space"]) & _OPERATOR[c2] & (c3 == cid["space"])),
        both & (c0 == cid["backslash"]) & _LETTER[c1],
        three & letter & (c1 == cid["underscore"]) & _LETTER[c2],
        both & (c0 == cid["lower"]) & (c1 == cid["upper"]),
        both & (letter | (c0 == cid["underscore"]) | digit) & (c1 == cid["paren"]),
        both & (((c0 == cid["equals"]) & (c1 == cid["equals"])) | ((c0 == cid["minus"]) & (c1 == cid["angle"]))
                | ((c0 == cid["colon"]) & (c1 == cid["colon"])) | ((c0 == cid["slash"]) & (c1 == cid["slash"]))
                | ((c0 == cid["amp"]) & (c1 == cid["amp"])) | ((c0 == cid["pipe"]) & (c1 == cid["pipe"]))
                | (_OPERATOR[c0] & (c1 == cid["equals"]) & (c0 != cid["equals"]))),
        three & (c0 == cid["period"]) & _BLANK[c1] & (c2 == cid["upper"]),
        inside[:-1] & (c0 == cid["question"]) & (_BLANK[c1] | ~inside[1:]),
        both & (c0 == cid["newline"]) & (c1 == cid["newline"]),
        # A word starts after a blank, or at a document's first byte (after a separator).
        word_start,
    ]
    docs = doc_of_byte[1:]
    out = np.empty((n_docs, len(patterns)))
    for column, mask in enumerate(patterns):
        out[:, column] = _per_doc(docs[mask], n_docs)
    return out


def _offsets(prefixes: list[str]) -> np.ndarray:
    """Where each document starts in the joined batch (characters)."""
    return len(_SEP) + np.concatenate([[0], np.cumsum([len(prefix) + len(_SEP) for prefix in prefixes])[:-1]])


def _regex_counts(
    patterns: dict[str, tuple[bool, re.Pattern]], texts_at: dict[bool, tuple[str, np.ndarray]], n_docs: int
) -> np.ndarray:
    """Match counts of each pattern per document, from one scan of the joined batch per pattern.

    ``texts_at`` holds the joined batch as is (False) and lowercased (True), with document offsets.
    """
    out = np.empty((n_docs, len(patterns)))
    for column, (on_lowered, pattern) in enumerate(patterns.values()):
        text, offsets = texts_at[on_lowered]
        positions = np.fromiter((match.start() for match in pattern.finditer(text)), dtype=np.int64)
        out[:, column] = _per_doc(np.searchsorted(offsets, positions, side="right"), n_docs)
    return out


def _lexicon_counts(lowered: list[str]) -> np.ndarray:
    """Words of each lexicon per document (``lowered``: the lowercased prefixes)."""
    out = np.zeros((len(lowered), len(_LEXICONS)))
    for row, prefix in enumerate(lowered):
        hits = [_LEXICON_ID[word] for word in _WORD_RE.findall(prefix) if word in _LEXICON_ID]
        if hits:
            out[row] = np.bincount(hits, minlength=len(_LEXICONS))
    return out


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# What each signal is evidence *for* and *against*, per domain label of the bundled tag set: the
# combiner learns how much each signal counts, but only in these directions. Without them it
# learns the sample corpus's accidents (Shakespeare's speaker lines are "web", so dialogue would
# mean web; DeepMind's "Answer:" lines would mean "not math"). Labels not listed here (a user's
# own tag set) get every signal in both directions.
SIGNAL_PRIORS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "code": (_names(
        "char_semicolon char_curly char_underscore char_equals char_paren char_square char_angle char_quote char_hash "
        "char_dollar line_end_semicolon line_end_curly line_end_paren line_end_colon line_start_space line_start_hash "
        "line_start_curly line_start_at line_start_dollar pair_snake_case pair_camel_case pair_call_paren "
        "pair_code_operator pair_backslash_letter lines_code_lines"),
        _names("words_function_words")),
    "math": (_names(
        "pair_number_word char_digit char_plus char_equals char_caret char_paren char_backslash char_dollar char_pipe "
        "pair_digit_op_digit pair_backslash_letter words_math_words words_latex"),
        _names("words_function_words")),
    "qa": (_names(
        "opens_with_question line_end_question char_question pair_question_end lines_question_openers "
        "lines_dialogue_markers lines_label_lines words_function_words"),
        frozenset()),
    "academic": (_names(
        "words_academic_words words_citation_words words_numbered_citations words_author_year words_latex "
        "words_math_words pair_backslash_letter pair_sentence_start char_comma words_function_words"),
        frozenset()),
    "other": (_names(
        "words_boilerplate_words words_urls line_start_slash line_start_digit line_end_digit char_slash char_at "
        "char_pipe char_digit char_minus char_percent char_upper lines_label_lines log_chars_per_word "
        "log_words_per_punct"),
        _names("words_function_words pair_sentence_start line_end_period")),
    "web": (_names(
        "words_function_words words_urls char_period char_comma char_upper line_end_period line_end_lower "
        "pair_sentence_start log_chars_per_line"),
        _names("log_words_per_punct")),
}
