"""Quality checks of a translated chunk (tasks/core/translate/checks.py) and the translation
prompt (tasks/core/translate/prompt.py): each reason is raised by a realistic bad output and not
by a faithful Japanese one, short and code-only sources pass, Latin-script targets skip the
script check and say so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tasks.core.translate.checks import CheckLimits, check
from tasks.core.translate.prompt import LANGUAGES, messages
from tasks.core.translate.spans import mask

EXERCISE = ("Regular exercise improves both physical and mental health. Even a short walk every day "
            "can lower stress and help you sleep better.\n\nIf you are just getting started, choose an "
            "activity you enjoy and set a small, realistic goal.")
EXERCISE_JA = ("定期的な運動は、心と体の両方の健康を向上させます。毎日の短い散歩でも、"
               "ストレスが減り、よく眠れるようになります。\n\nこれから始めるなら、楽しめる"
               "運動を選び、小さく現実的な目標を立てましょう。")

FILES = ("To read a file line by line in Python, open it with `open()` and loop over the file object:"
         "\n\n```python\nwith open(\"data.txt\") as f:\n    for line in f:\n        print(line.strip())\n"
         "```\n\nThe `with` statement closes the file for you, even if an error occurs. See "
         "https://docs.python.org/3/tutorial/inputoutput.html for details.")
FILES_JA = ("Pythonでファイルを1行ずつ読むには、⟦0⟧で開いてファイルオブジェクトをループします。\n\n⟦1⟧\n\n"
            "⟦2⟧文を使うと、エラーが起きてもファイルが自動的に閉じられます。詳しくは⟦3⟧を参照してください。")

SLEEP = ("## Tips for better sleep\n\n1. Go to bed at the same time every night.\n2. Avoid caffeine in "
         "the afternoon.\n3. Keep your bedroom cool and dark.\n\n- Put your phone away an hour before bed."
         "\n- Try a short breathing exercise.")
SLEEP_JA = ("## よく眠るためのコツ\n\n1. 毎晩同じ時間に寝ましょう。\n2. 午後はカフェインを控えましょう。\n"
            "3. 寝室は涼しく暗く保ちましょう。\n\n- 寝る1時間前にはスマートフォンを置きましょう。\n"
            "- 短い呼吸法を試してみてください。")

PLANS = ("| Plan | Price | Storage |\n|------|-------|---------|\n| Basic | $5 | 50 GB |\n"
         "| Pro | $12 | 1 TB |\n\nThe Pro plan also includes priority support.")
PLANS_JA = ("| プラン | 料金 | ストレージ |\n|------|-------|---------|\n| ベーシック | $5 | 50 GB |\n"
            "| プロ | $12 | 1 TB |\n\nプロプランには優先サポートも含まれます。")

WALL = ("The Great Wall of China is not visible to the naked eye from the Moon. Astronauts have "
        "confirmed that it is far too narrow to be seen from that distance.\n\nConfidence: 90%")
WALL_JA = ("万里の長城は、月から肉眼で見ることはできません。宇宙飛行士も、その距離から"
           "見るには幅が狭すぎると確認しています。\n\n⟦0⟧")

REACT = ("In React, the useEffect hook runs side effects after a component renders. Pass an empty "
         "dependency array to run it only once, when the component mounts.")
REACT_JA = ("Reactでは、useEffectフックはコンポーネントのレンダリング後に副作用を実行します。コンポーネントの"
            "マウント時に一度だけ実行するには、空の依存配列を渡します。")


def _check(source: str, output: str, lang: str = "ja", finish_reason: str | None = "stop", **limits):
    return check(mask(source), output, finish_reason, lang, CheckLimits(**limits))


# -- faithful translations pass -------------------------------------------------------------------

@pytest.mark.parametrize(("source", "output"), [
    (EXERCISE, EXERCISE_JA),
    (FILES, FILES_JA),
    (SLEEP, SLEEP_JA),
    (PLANS, PLANS_JA),
    (WALL, WALL_JA),
    (REACT, REACT_JA),  # English names kept in a Japanese sentence
    ("Write a short poem about autumn leaves falling in a quiet park.",
     "静かな公園に舞い落ちる秋の葉について、短い詩を書いてください。"),
    ("Use `map()` with a `lambda` to double each number.", "⟦1⟧と⟦0⟧を使って、各数値を2倍にします。"),
    ("Note: back up your files before you upgrade.",
     "注：アップグレードの前にファイルをバックアップしてください。"),
    ("Sure, here is a simple recipe for pancakes that takes about twenty minutes.",
     "もちろんです。約20分で作れる簡単なパンケーキのレシピをご紹介します。"),
    ("Correct the grammar in this sentence: \"She don't like going to the store on Sundays.\"",
     "次の文の文法を直してください：\"She don't like going to the store on Sundays.\""),
    ("Correct the grammar in this sentence: 'She don't like going to the store on Sundays.'",
     "次の文の文法を直してください：「She don't like going to the store on Sundays.」"),
    ("Is 'the cat who always sleeps on the sofa in the afternoon' a complete sentence?",
     "'the cat who always sleeps on the sofa in the afternoon' は完全な文ですか？"),
    ("Popular languages for beginners include Python, JavaScript, Ruby, Go, Swift, Kotlin and Rust.",
     "初心者に人気の言語には、Python, JavaScript, Ruby, Go, Swift, Kotlin and Rustがあります。"),
])
def test_faithful_japanese_passes(source, output):
    result = _check(source, output)
    assert result.ok, result.details
    assert result.reasons == () and result.details == {}


@pytest.mark.parametrize(("source", "output"), [
    ("Yes", "はい"),
    ("Thanks!", "ありがとうございます！"),
    ("Continue", "続けてください"),
    ("OK", "了解しました"),
    ("Python", "Python"),  # a name stays a name
    ("Barack Obama", "Barack Obama"),
    ("Python, JavaScript, Go", "Python, JavaScript, Go"),  # a list of names
    ("42", "42"),
    ("1, 2, 3, 5, 8, 13, 21", "1, 2, 3, 5, 8, 13, 21"),
    ("```js\nconsole.log(\"hello\");\n```", "⟦0⟧"),  # a code-only answer
    ("See https://example.com", "⟦0⟧を参照してください"),
])
def test_short_and_letterless_sources_pass(source, output):
    result = _check(source, output)
    assert result.ok, result.details


def test_short_sources_say_which_checks_were_skipped():
    result = _check("Yes", "はい")
    assert set(result.skipped) == {"wrong_script", "length_ratio"}
    assert "3 letters" in result.skipped["wrong_script"]


# -- each reason ------------------------------------------------------------------------------------

def test_empty():
    for output in ("", "  \n"):
        result = _check(EXERCISE, output)
        assert result.reasons == ("empty",)


def test_empty_and_truncated_are_all_an_empty_reply_reports():
    assert _check(EXERCISE, "", finish_reason="length").reasons == ("empty", "truncated")


def test_truncated():
    cut = "定期的な運動は、心と体の両方の健康を向上させます。毎日の短い散歩でも、ストレスが減り、よく眠れる"
    result = _check("Regular exercise improves both physical and mental health. Even a short walk every "
                    "day can lower stress and help you sleep better.", cut, finish_reason="length")
    assert result.reasons == ("truncated",)


def test_spans_damaged():
    result = _check(FILES, FILES_JA.replace("⟦2⟧文", "with文"))
    assert result.reasons == ("spans_damaged",)
    assert result.details["spans_damaged"] == "missing ⟦2⟧"
    assert _check(FILES, FILES_JA.replace("⟦0⟧", "⟦０⟧")).reasons == ("spans_damaged",)


def test_structure():
    merged = ("## よく眠るためのコツ\n\n毎晩同じ時間に寝て、午後はカフェインを控え、"
              "寝室は涼しく暗く保ちましょう。\n\n- 寝る1時間前にはスマートフォンを置きましょう。\n"
              "- 短い呼吸法を試してみてください。")
    result = _check(SLEEP, merged)
    assert result.reasons == ("structure",)
    assert result.details["structure"] == "line mark 3: numbered 1 in the source, text in the output"


@pytest.mark.parametrize("output", [
    "以下は翻訳です：\n\n" + EXERCISE_JA,
    "翻訳：" + EXERCISE_JA,
    "Sure! Here is the Japanese translation:\n\n" + EXERCISE_JA,
    "Japanese translation: " + EXERCISE_JA,
    EXERCISE_JA + "\n\n（注：「ストレス」はカタカナ語のまま訳しました。）",
    EXERCISE_JA + "\n\n(Note: I kept the tone casual.)",
    EXERCISE_JA + "（注：原文の口調に合わせました。）",
    "補足：" + EXERCISE_JA,
    "はい、承知しました。" + EXERCISE_JA,
    "翻訳結果は次のとおりです：\n\n" + EXERCISE_JA,
    "日本語に翻訳しました。\n\n" + EXERCISE_JA,
    "Here is the Japanese version of the text:\n\n" + EXERCISE_JA,
])
def test_commentary(output):
    result = _check(EXERCISE, output)
    assert "commentary" in result.reasons, result.details


def test_commentary_that_is_in_the_source_is_a_translation():
    source = ("Here is the translation of your sentence into French: \"Je suis content de vous voir.\" "
              "It is a polite way to greet someone.")
    output = ("以下が、あなたの文のフランス語訳です：\"Je suis content de vous voir.\" "
              "丁寧なあいさつの表現です。")
    assert _check(source, output).ok


def test_untranslated_unchanged():
    result = _check(EXERCISE, EXERCISE)
    assert "untranslated" in result.reasons
    assert result.details["untranslated"] == "the output is the source unchanged"
    assert _check("How are you?", "How are you?").reasons == ("untranslated",)


def test_untranslated_english_left_in():
    half = EXERCISE_JA.split("\n\n")[0] + ("\n\nIf you are just getting started, choose an "
                                           "activity you enjoy and set a small, realistic goal.")
    result = _check(EXERCISE, half)
    assert result.reasons == ("untranslated",)
    assert result.details["untranslated"].startswith("English left in: 'If you are just")


def test_wrong_script_english_rewrite():
    rewrite = ("Working out on a regular basis is good for the body and the mind. A daily stroll "
               "reduces stress and improves sleep.\n\nBeginners should pick something fun and aim "
               "for a modest target.")
    result = _check(EXERCISE, rewrite)
    assert "wrong_script" in result.reasons
    assert result.details["wrong_script"] == "Japanese (kana, kanji) letters are 0% of letters (< 30%)"


def test_wrong_script_chinese_for_japanese():
    chinese = ("定期运动可以改善身心健康。即使每天短暂散步，也能减轻压力，帮助你睡得更好。\n\n"
               "如果你刚刚开始，选择一项你喜欢的活动，并设定一个小而现实的目标。")
    result = _check(EXERCISE, chinese)
    assert result.reasons == ("wrong_script",)
    assert result.details["wrong_script"].endswith("no kana")
    assert _check(EXERCISE, chinese, lang="zh").ok


def test_wrong_script_korean_for_japanese():
    korean = ("규칙적인 운동은 신체와 정신 건강을 모두 향상시킵니다. 매일 짧은 "
              "산책만으로도 스트레스를 줄이고 잠을 더 잘 잘 수 있습니다.\n\n이제 막 "
              "시작한다면 즐길 수 있는 활동을 고르고 작고 현실적인 목표를 세우세요.")
    assert _check(EXERCISE, korean).reasons == ("wrong_script",)
    assert _check(EXERCISE, korean, lang="ko").ok


def test_length_ratio_dropped_content():
    source = ("Regular exercise improves both physical and mental health. Even a short walk every day can "
              "lower stress and help you sleep better. If you are just getting started, choose an activity "
              "you enjoy and set a small, realistic goal.")
    result = _check(source, "定期的な運動は健康に良いです。")
    assert result.reasons == ("length_ratio",)
    assert result.details["length_ratio"].endswith("outside 0.25-1.3")


def test_length_ratio_runaway_repetition():
    looped = "定期的な運動は、心と体の両方の健康を向上させます。" * 12
    source = ("Regular exercise improves both physical and mental health. Even a short walk every day can "
              "lower stress and help you sleep better.")
    assert _check(source, looped).reasons == ("length_ratio",)


def test_all_failing_reasons_at_once():
    output = "Sure! Here you go:\n" + EXERCISE
    result = _check(EXERCISE, output, finish_reason="length")
    assert result.reasons == ("truncated", "structure", "commentary", "untranslated", "wrong_script")
    assert set(result.details) == set(result.reasons)


# -- other targets --------------------------------------------------------------------------------

def test_latin_script_target_skips_the_script_check_and_says_so():
    german = ("Regelmäßige Bewegung verbessert die körperliche und geistige Gesundheit. Schon ein "
              "kurzer Spaziergang am Tag kann Stress abbauen und den Schlaf verbessern.\n\nWer "
              "gerade erst anfängt, sollte eine Aktivität wählen, die Spaß macht, und sich ein "
              "kleines, realistisches Ziel setzen.")
    result = _check(EXERCISE, german, lang="de")
    assert result.ok, result.details
    assert "Latin-script" in result.skipped["wrong_script"]
    assert "untranslated" in result.skipped
    assert _check(EXERCISE, EXERCISE, lang="de").reasons == ("untranslated",)


def test_russian_target():
    russian = ("Регулярные упражнения улучшают физическое и психическое здоровье. Даже короткая "
               "ежедневная прогулка снижает стресс и помогает лучше спать.\n\nЕсли вы только "
               "начинаете, выберите занятие по душе и поставьте небольшую реалистичную цель.")
    assert _check(EXERCISE, russian, lang="ru").ok
    assert _check(EXERCISE, EXERCISE_JA, lang="ru").reasons == ("wrong_script", "length_ratio")


def test_limits_override_language_thresholds():
    source = "Use pandas and numpy to load the data, clean it and plot the results."
    output = "pandasとnumpyでデータを読み込み、整形して結果をグラフにします。"
    assert _check(source, output).ok
    assert _check(source, output, script_share=0.9).reasons == ("wrong_script",)
    assert _check(EXERCISE, EXERCISE_JA, length_band=(0.8, 1.2)).reasons == ("length_ratio",)


# -- the prompt -----------------------------------------------------------------------------------

def test_messages_carry_the_masked_text_as_the_user_message():
    masked = mask(FILES)
    system, user = messages(masked.text, "ja")
    assert user == {"role": "user", "content": masked.text}
    assert system["role"] == "system"
    assert system["content"].startswith("Translate the text in the user's message into Japanese.")
    for rule in ("register and tone", "Markdown structure", "⟦0⟧", "exactly once", "no preamble"):
        assert rule in system["content"]


def test_the_simulator_routes_the_prompt_to_its_translation_role():
    routes = yaml.safe_load((Path(__file__).parents[2] / "infra/simulator/routes.yaml").read_text())
    translate = next(r for r in routes if r["kind"] == "translate")
    system, user = messages(mask(SLEEP).text, "ja")
    match = re.search(translate["pattern"], system["content"] + "\n" + user["content"])
    assert match and match.start() < len(system["content"])  # found in the system message


@pytest.mark.parametrize("lang", sorted(LANGUAGES))
def test_every_language_renders(lang):
    assert f"into {LANGUAGES[lang]}." in messages("x", lang)[0]["content"]


def test_unknown_language():
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        messages("x", "xx")
