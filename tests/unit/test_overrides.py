"""`--set key.path=value` overrides on recipe data."""

import pytest

from tasks.adapters.errors import ConfigError
from tasks.core.yamlconf import apply_overrides


def test_nested_keys_lists_and_yaml_values():
    data = {"plan": {"n_models": 4}, "sources": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]}
    out = apply_overrides(data, ["plan.n_models=2", "sources.1.path=c.csv", "export.name=x",
                                 "plan.models=[gpt-4, bard]"])
    assert out == {"plan": {"n_models": 2, "models": ["gpt-4", "bard"]}, "export": {"name": "x"},
                   "sources": [{"path": "a.jsonl"}, {"path": "c.csv"}]}
    assert data["sources"][1]["path"] == "b.jsonl" and data["plan"]["n_models"] == 4  # untouched


@pytest.mark.parametrize(("item", "message"), [
    ("plan.n_models", "expected key.path=value"),
    ("=3", "expected key.path=value"),
    ("sources.7.path=x", "sources is a list of 1"),
    ("sources.first.path=x", "not an index"),
])
def test_bad_overrides_are_named(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides({"sources": [{"path": "a"}]}, [item])
