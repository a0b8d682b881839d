"""Protected spans of the translation flow (tasks/core/translate/spans.py): what is masked, that
unmasking gives the source back byte for byte, how damaged placeholders are reported, and the
Markdown signature the structure check compares."""

from __future__ import annotations

import pytest

from tasks.core.translate.spans import (
    Mark,
    Masked,
    Protect,
    mask,
    placeholders_intact,
    span_damage,
    structure,
    unmask,
)

TRICKY = [
    "",
    "   ",
    "\n\n\n",
    "Plain text with no spans at all.",
    "Intro:\n\n```python\ndef f():\n\n    return 1\n```\n\nOutro.",
    "```\nunclosed fence\n\nruns to the end\n",
    "~~~~\ncode with ``` inside\n~~~~\nafter",
    "1. Step one:\n   ```bash\n   pip install requests\n   ```\n2. Step two.",
    "Use `x`, ``a ` b`` and `` ` `` here. A lone ` backtick stays.",
    "See https://en.wikipedia.org/wiki/Python_(programming_language)). And www.example.com.",
    "<|im_start|>system\nBe brief.<|im_end|>\n<s>[INST] <<SYS>>\nhi\n<</SYS>> [/INST] ok </s>",
    "The answer is 4.\n\nConfidence: 95%",
    "Already has ⟦0⟧ and ⟦12⟧ and a lone ⟦ and ⟧ in it.",
    "Windows line ends\r\n```\r\ncode\r\n```\r\nConfidence: 80%\r\n",
    "Tabs\tand\u3000ideographic\u00a0spaces ⟦ `c` ⟧",
]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("protect", [Protect(), Protect(units=True, extra_lines=(r"Rating:",)),
                                     Protect(code=False, urls=False, special_tokens=False,
                                             confidence=False)])
def test_unmask_gives_the_source_back_byte_for_byte(text, protect):
    masked = mask(text, protect)
    assert unmask(masked.text, masked) == text
    assert placeholders_intact(masked.text, masked)


def test_placeholders_are_numbered_in_order_of_appearance():
    masked = mask("Run `a`, then:\n\n```\nb\n```\n\nthen `c`.")
    assert masked.text == "Run ⟦0⟧, then:\n\n⟦1⟧\n\nthen ⟦2⟧."
    assert masked.spans == ("`a`", "```\nb\n```", "`c`")


# -- what is protected ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "masked", "spans"), [
    # a fenced block, blank lines and all, is one placeholder on its own line
    ("Look:\n```js\nconst a = 1;\n\nconsole.log(a);\n```\nDone.", "Look:\n⟦0⟧\nDone.",
     ("```js\nconst a = 1;\n\nconsole.log(a);\n```",)),
    ("~~~\nx\n~~~", "⟦0⟧", ("~~~\nx\n~~~",)),
    # a closing fence must be the same character and at least as long
    ("````\na\n```\nb\n````\nc", "⟦0⟧\nc", ("````\na\n```\nb\n````",)),
    # the indentation of a fence in a list item belongs to the span
    ("- install:\n  ```\n  pip install x\n  ```", "- install:\n⟦0⟧", ("  ```\n  pip install x\n  ```",)),
    ("```\nnever closed\nstill code", "⟦0⟧", ("```\nnever closed\nstill code",)),
    # three backticks inside a line are inline code, not a fence
    ("Type ```ls -la``` now.", "Type ⟦0⟧ now.", ("```ls -la```",)),
    ("Call ``print(`x`)`` here.", "Call ⟦0⟧ here.", ("``print(`x`)``",)),
    ("Go to https://example.com/docs?page=2#top.", "Go to ⟦0⟧.", ("https://example.com/docs?page=2#top",)),
    ("(see https://example.com/a)", "(see ⟦0⟧)", ("https://example.com/a",)),
    ("[the docs](https://docs.python.org/3/)", "[the docs](⟦0⟧)", ("https://docs.python.org/3/",)),
    ("Visit www.example.org, or ftp://files.example.org/pub!", "Visit ⟦0⟧, or ⟦1⟧!",
     ("www.example.org", "ftp://files.example.org/pub")),
    ("**https://example.com**", "**⟦0⟧**", ("https://example.com",)),
    ("<|user|>Hi<|end|>", "⟦0⟧Hi⟦1⟧", ("<|user|>", "<|end|>")),
    ("<s>[INST] <<SYS>>Be kind<</SYS>> Hi [/INST]</s>", "⟦0⟧⟦1⟧ ⟦2⟧Be kind⟦3⟧ Hi ⟦4⟧⟦5⟧",
     ("<s>", "[INST]", "<<SYS>>", "<</SYS>>", "[/INST]", "</s>")),
    ("It is Paris.\n\nConfidence: 90%", "It is Paris.\n\n⟦0⟧", ("Confidence: 90%",)),
    ("**Confidence: 72.5 %**", "⟦0⟧", ("**Confidence: 72.5 %**",)),
    ("A literal ⟦0⟧ stays apart from ours: `x`", "A literal ⟦0⟧ stays apart from ours: ⟦1⟧", ("⟦0⟧", "`x`")),
    ("A lone ⟦ bracket", "A lone ⟦0⟧ bracket", ("⟦",)),
    # a URL inside inline code is part of the code span
    ("Run `curl https://x.io`.", "Run ⟦0⟧.", ("`curl https://x.io`",)),
])
def test_protected_spans(text, masked, spans):
    got = mask(text)
    assert (got.text, got.spans) == (masked, spans)


@pytest.mark.parametrize("text", [
    "My confidence: high.",  # not a Confidence: NN% line
    "I am 90% sure. Confidence is key.",
    "One backtick ` here\nand one ` there",  # inline code stays on one line
    "He weighs 80 kg and runs 5 km.",  # units are off by default
    "Email me at someone@example.com",
    "Brackets [like this] and <tags> stay.",
])
def test_left_as_text(text):
    assert mask(text) == Masked(text=text)


def test_units_when_asked():
    protect = Protect(units=True)
    masked = mask("It weighs 5 kg, runs at 3.2GHz, costs $40 (€1,299.99) and is 10% off.", protect)
    assert masked.spans == ("5 kg", "3.2GHz", "$40", "€1,299.99", "10%")
    # numbers followed by words that are not units stay text
    assert mask("Meet at 3 in the morning with 2 apples.", protect).spans == ()
    assert mask("Only 5 parsecs.", Protect(units=True, unit_symbols=("parsecs",))).spans == ("5 parsecs",)


def test_extra_lines_must_be_regular_expressions():
    with pytest.raises(ValueError, match="not a regular expression"):
        Protect(extra_lines=("Rating: (",))


def test_extra_lines_and_switches():
    text = "Rating: 4\nRationale: clear and correct.\nConfidence: 80%"
    assert mask(text, Protect(extra_lines=(r"Rating:",))).text == "⟦0⟧\nRationale: clear and correct.\n⟦1⟧"
    assert mask(text, Protect(confidence=False)).text == text
    assert mask("`x` https://a.io", Protect(code=False, urls=False)).text == "`x` https://a.io"


# -- damage ---------------------------------------------------------------------------------------

SOURCE = mask("Use `map()` with a `lambda`:\n\n```python\nlist(map(lambda x: x * 2, xs))\n```\n\n"
              "Confidence: 85%")


def test_source_masks_as_expected():
    assert SOURCE.text == "Use ⟦0⟧ with a ⟦1⟧:\n\n⟦2⟧\n\n⟦3⟧"


def test_inline_placeholders_may_move_within_the_line():
    japanese = "⟦1⟧と一緒に⟦0⟧を使います。\n\n⟦2⟧\n\n⟦3⟧"
    assert span_damage(japanese, SOURCE) is None
    assert unmask(japanese, SOURCE) == ("`lambda`と一緒に`map()`を使います。\n\n```python\n"
                                        "list(map(lambda x: x * 2, xs))\n```\n\nConfidence: 85%")


@pytest.mark.parametrize(("output", "problem"), [
    ("⟦1⟧と一緒に関数を使います。\n\n⟦2⟧\n\n⟦3⟧", "missing ⟦0⟧"),
    ("⟦0⟧と⟦0⟧と⟦1⟧を使います。\n\n⟦2⟧\n\n⟦3⟧", "duplicated ⟦0⟧"),
    ("⟦0⟧と⟦1⟧を使います。\n\n⟦2⟧\n\n⟦3⟧\n⟦4⟧", "unknown ⟦4⟧"),
    ("⟦０⟧と⟦1⟧を使います。\n\n⟦2⟧\n\n⟦3⟧", "missing ⟦0⟧; 2 stray brackets (an altered placeholder)"),
    ("⟦ 0⟧と⟦1⟧を使います。\n\n⟦2⟧\n\n⟦3⟧", "missing ⟦0⟧; 2 stray brackets (an altered placeholder)"),
    ("⟦0⟧と⟦1⟧を使います。\n\n⟦3⟧\n\n⟦2⟧", "placeholder lines moved or reordered"),
    ("⟦0⟧と⟦1⟧を使います。⟦2⟧\n\n⟦3⟧", "placeholder lines moved or reordered"),
])
def test_span_damage(output, problem):
    assert span_damage(output, SOURCE) == problem
    assert not placeholders_intact(output, SOURCE)


def test_unmask_leaves_damaged_placeholders_alone():
    assert unmask("⟦０⟧ ⟦9⟧ ⟦1⟧", SOURCE) == "⟦０⟧ ⟦9⟧ `lambda`"


def test_segments_share_the_spans_tuple():
    segment = SOURCE.model_copy(update={"text": "⟦2⟧\n\n⟦3⟧"})
    assert span_damage("⟦2⟧\n\n⟦3⟧", segment) is None
    assert span_damage("⟦2⟧", segment) == "missing ⟦3⟧"


# -- Markdown structure ---------------------------------------------------------------------------

def test_structure_marks():
    text = ("# Title\n\n## Part 1\nSome text.\n\n- one\n* two\n  + nested\n\n1. first\n2) second\n\n"
            "> quoted\n>> deeper\n\n| a | b |\n|---|---|\n| 1 | 2 \\| 3 |\n\n---\n⟦0⟧\n\n\n\nend")
    assert structure(text) == (
        Mark("heading", 1), Mark("blank"), Mark("heading", 2), Mark("text"), Mark("blank"),
        Mark("bullet"), Mark("bullet"), Mark("bullet", nested=True), Mark("blank"),
        Mark("numbered", 1), Mark("numbered", 2), Mark("blank"),
        Mark("quote", 1), Mark("quote", 2), Mark("blank"),
        Mark("table", 2), Mark("table", 2), Mark("table", 2), Mark("blank"),
        Mark("rule"), Mark("placeholder"), Mark("blank"), Mark("text"))


def test_structure_ignores_outer_blank_lines_and_collapses_runs():
    want = (Mark("text"), Mark("blank"), Mark("text"))
    assert structure("\n\na\n\n\n\nb\n\n") == structure("a\n\nb") == want


def test_structure_of_a_faithful_japanese_translation_matches():
    english = ("## Steps\n\n1. Open the app.\n2. Tap **Settings**.\n\n"
               "| Key | Action |\n|---|---|\n| A | Save |")
    japanese = ("## 手順\n\n1. アプリを開きます。\n2. **設定**をタップします。\n\n"
                "| キー | 操作 |\n|---|---|\n| A | 保存 |")
    assert structure(english) == structure(japanese)


@pytest.mark.parametrize("japanese", [
    "手順\n\n1. アプリを開きます。\n2. **設定**をタップします。",  # heading mark lost
    "## 手順\n\nアプリを開いて、**設定**をタップします。",  # list merged into a sentence
    "## 手順\n1. アプリを開きます。\n2. **設定**をタップします。",  # blank line lost
    "## 手順\n\n1. アプリを開きます。\n1. **設定**をタップします。",  # renumbered
    "## 手順\n\n1．アプリを開きます。\n2．**設定**をタップします。",  # full-width dots are no list
])
def test_structure_differences(japanese):
    assert structure(japanese) != structure("## Steps\n\n1. Open the app.\n2. Tap **Settings**.")
