"""The translation request: our system prompt (tasks/core/templates/translate/system.txt) naming
the target language, and the masked text as the user message.

The system prompt opens with "Translate … into <Language>": the simulator routes a request to
its translation role by that phrase (infra/simulator/routes.yaml) and, finding it in the system
message, takes the whole user message as the text to translate.
"""

from __future__ import annotations

from tasks.core.prompts import render

LANGUAGES: dict[str, str] = {
    "ja": "Japanese", "zh": "Simplified Chinese", "ko": "Korean", "ru": "Russian",
    "uk": "Ukrainian", "ar": "Arabic", "he": "Hebrew", "el": "Greek", "th": "Thai", "hi": "Hindi",
    "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "vi": "Vietnamese", "id": "Indonesian",
}


def language_name(lang: str) -> str:
    """The English name of a language code of LANGUAGES; a ValueError names the known codes."""
    try:
        return LANGUAGES[lang]
    except KeyError:
        raise ValueError(f"unknown language {lang!r}; known: {', '.join(sorted(LANGUAGES))}") from None


def system_prompt(lang: str) -> str:
    return render("translate/system.txt", language=language_name(lang))


def messages(masked_text: str, lang: str) -> list[dict[str, str]]:
    """The chat messages (the `ChatRequest.messages` shape) translating one masked chunk."""
    return [{"role": "system", "content": system_prompt(lang)},
            {"role": "user", "content": masked_text}]
