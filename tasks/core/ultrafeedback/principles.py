"""Principles, their per-source mixes, and the system-prompt pools (one file per principle).

docs/datasets.md#principles gives two mixes that disagree:

| source                | `paper` (README table)              | `code` (published sampling code)         |
|-----------------------|-------------------------------------|------------------------------------------|
| evol_instruct         | helpfulness 1                       | helpfulness 1                            |
| false_qa              | truthfulness 1                      | honesty .45, verbalized .05, truthful .5 |
| flan                  | helpful .6, truthful .2, verbal. .2 | helpfulness .8, verbalized .2            |
| sharegpt, ultrachat   | helpful .6, truthful .2, honesty .18, verbalized .02 (both)                    |
| truthful_qa           | truthfulness 1                      | honesty .45, verbalized .05, truthful .5 |
| anything else         | helpfulness 1                       | helpfulness 1                            |

The `code` weights are the exact distribution of the code's two-step draw (uniform over a
per-source list, then honesty → verbalized_calibration with probability 0.1), flattened into one
weighted draw so a single seeded number decides it.

**Default: `code`.** The released data was produced by running code, and the one row where the
two sources agree (ShareGPT/UltraChat 60/20/18/2) is the code's two-step draw written out, so the
table was evidently summarised from code of this shape; where they differ, nothing in the
sources marks the code's principle lists as edited after the run (unlike its
`random.sample(pool, 1)` line, which contradicts the 4 completions in the data; see
docs/datasets.md#model-sampling). Which mix was actually run is UNVERIFIED: count
`completions[].principle` per source in `openbmb/UltraFeedback` when it can be downloaded, and
switch with `--set plan.principle_mix=paper` if the data says so.

System prompts are ours (not OpenBMB's text): `templates/ultrafeedback/principles/<name>.txt`,
one prompt per line, first line canonical, `#` comments, `\\n` for a line break inside a prompt.
"""

from __future__ import annotations

from functools import cache

from tasks.core.prompts import TEMPLATES

PRINCIPLES = ("helpfulness", "honesty", "truthfulness", "verbalized_calibration", "harmlessness")
SOURCES = ("evol_instruct", "false_qa", "flan", "sharegpt", "truthful_qa", "ultrachat")

_CHAT_MIX = {"helpfulness": 0.6, "truthfulness": 0.2, "honesty": 0.18,
             "verbalized_calibration": 0.02}
_QA_CODE_MIX = {"honesty": 0.45, "verbalized_calibration": 0.05, "truthfulness": 0.5}
_HELPFUL = {"helpfulness": 1.0}

MIXES: dict[str, dict[str, dict[str, float]]] = {
    "code": {
        "evol_instruct": _HELPFUL, "false_qa": _QA_CODE_MIX,
        "flan": {"helpfulness": 0.8, "verbalized_calibration": 0.2},
        "sharegpt": _CHAT_MIX, "ultrachat": _CHAT_MIX, "truthful_qa": _QA_CODE_MIX,
        "default": _HELPFUL,
    },
    "paper": {
        "evol_instruct": _HELPFUL, "false_qa": {"truthfulness": 1.0},
        "flan": {"helpfulness": 0.6, "truthfulness": 0.2, "verbalized_calibration": 0.2},
        "sharegpt": _CHAT_MIX, "ultrachat": _CHAT_MIX, "truthful_qa": {"truthfulness": 1.0},
        "default": _HELPFUL,
    },
}

POOL_DIR = TEMPLATES / "ultrafeedback" / "principles"


def principle_weights(mix: str, source: str,
                      custom: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """The principle distribution for `source` under `mix` (`code`, `paper` or `custom`)."""
    table = custom if mix == "custom" else MIXES[mix]
    if not table:
        raise ValueError(f"principle mix {mix!r} has no weights")
    weights = table.get(source) or table.get("default") or _HELPFUL
    return {p: float(weights[p]) for p in PRINCIPLES if weights.get(p, 0) > 0}


def pick_weighted(weights: dict[str, float], u: float) -> str:
    """The key whose cumulative-weight interval holds `u` ∈ [0, 1) (keys in PRINCIPLES order)."""
    names = [p for p in PRINCIPLES if p in weights] + sorted(set(weights) - set(PRINCIPLES))
    total = sum(weights[n] for n in names)
    acc = 0.0
    for name in names:
        acc += weights[name] / total
        if u < acc:
            return name
    return names[-1]


@cache
def system_prompts(principle: str) -> tuple[str, ...]:
    """The system-prompt pool of `principle` (canonical first)."""
    path = POOL_DIR / f"{principle}.txt"
    if not path.exists():
        raise ValueError(f"no system-prompt pool for principle {principle!r} at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    prompts = tuple(line.strip().replace("\\n", "\n") for line in lines
                    if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise ValueError(f"system-prompt pool {path} is empty")
    return prompts


def critique_note(principle: str, system_prompt: str) -> str:
    """The system prompt as quoted in the critique prompt: verbalized-calibration prompts are cut
    before their "For instance," example (docs/datasets.md#critique)."""
    if principle == "verbalized_calibration":
        return system_prompt.split("For instance,", 1)[0].strip()
    return system_prompt
