"""Bad pool configuration fails at load time with a message that says where and what."""

import pytest

from tasks.adapters.errors import ConfigError
from tasks.adapters.settings import RECIPES_DIR, Settings, secret_from_env
from tasks.core.pool import PoolConfig

GOOD_ENDPOINT = "endpoints:\n  local:\n    base_url: http://127.0.0.1:8900/v1\n"


def _load_error(tmp_path, text: str) -> str:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        PoolConfig.load(path)
    return str(err.value)


def test_bundled_pool_loads():
    pool = PoolConfig.load(RECIPES_DIR / "pool.yaml")
    assert len(pool.models) == 19  # the 17 UltraFeedback models, the judge, the translator
    assert pool.api_model("gpt-4-judge") == "gpt-4"
    assert pool.api_model("gpt-4-translator") == "gpt-4o"
    assert pool.limits("gpt-4").rpm == 5000


@pytest.mark.parametrize(("text", "line", "key", "allowed"), [
    ("endpoints: {}\nmodels: {}\nmodel: {}\n", 3, "model", "endpoints, models"),
    (GOOD_ENDPOINT + "    timeout: 5\nmodels: {}\n", 4, "endpoints.local.timeout", "timeout_s"),
    (GOOD_ENDPOINT + "    limits:\n      rpm: 10\n      rmp: 10\nmodels: {}\n", 6,
     "endpoints.local.limits.rmp", "rpm, tpm"),
    (GOOD_ENDPOINT + "models:\n  m1:\n    endpoint: local\n    prices: {}\n", 7,
     "models.m1.prices", "price"),
])
def test_unknown_key_names_file_line_key_and_allowed_keys(tmp_path, text, line, key, allowed):
    msg = _load_error(tmp_path, text)
    assert f"{tmp_path / 'pool.yaml'}:{line}: {key}: unknown key" in msg
    assert "allowed keys:" in msg and allowed in msg


@pytest.mark.parametrize("url", ["localhost:8900/v1", "ftp://host/v1", "http://", "api.openai.com"])
def test_malformed_url(tmp_path, url):
    msg = _load_error(tmp_path, f"endpoints:\n  local:\n    base_url: '{url}'\nmodels: {{}}\n")
    assert "pool.yaml:3: endpoints.local.base_url" in msg
    assert "malformed URL" in msg and "http(s)://" in msg


@pytest.mark.parametrize("value", ["sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7", "sk-ant-api03-abc",
                                   "hf_AbCdEf0123456789", "ab cd"])
def test_api_key_env_must_name_a_variable(tmp_path, value):
    msg = _load_error(tmp_path, GOOD_ENDPOINT + f"    api_key_env: '{value}'\nmodels: {{}}\n")
    assert "pool.yaml:4: endpoints.local.api_key_env" in msg
    assert "must name the environment variable" in msg


def test_api_key_env_error_does_not_echo_the_key(tmp_path):
    key = "sk-proj-Ab3dE5fG7hJ9kL1mN3pQ5rS7"
    msg = _load_error(tmp_path, GOOD_ENDPOINT + f"    api_key_env: '{key}'\nmodels: {{}}\n")
    assert key not in msg


def test_credentials_in_a_url_are_refused_without_echoing_them(tmp_path):
    msg = _load_error(tmp_path, "endpoints:\n  local:\n    base_url: 'https://bob:hunter2@host/v1'\n"
                                "models: {}\n")
    assert "credentials in the URL are not allowed" in msg and "hunter2" not in msg


def test_model_on_unknown_endpoint(tmp_path):
    msg = _load_error(tmp_path, GOOD_ENDPOINT + "models:\n  gpt-4: {endpoint: openai}\n")
    assert str(tmp_path / "pool.yaml") in msg
    assert "model 'gpt-4' names unknown endpoint 'openai'" in msg and "known: local" in msg


def test_not_yaml(tmp_path):
    msg = _load_error(tmp_path, "endpoints: [\n")  # more cases in test_yaml_errors.py
    assert msg == (f"{tmp_path / 'pool.yaml'}:2:1: not valid YAML: expected the node content, "
                   "but found '<stream end>' (while parsing a flow node)")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        PoolConfig.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("value", [None, ""])
def test_missing_key_variable_names_owner_and_variable(monkeypatch, value):
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)  # set, but not the variable the pool names
    if value is None:
        monkeypatch.delenv("ULTRAFORGE_TEST_MISSING_KEY", raising=False)
    else:
        monkeypatch.setenv("ULTRAFORGE_TEST_MISSING_KEY", value)

    with pytest.raises(ConfigError) as err:
        secret_from_env("ULTRAFORGE_TEST_MISSING_KEY", owner="endpoint 'openai'")
    assert "endpoint 'openai'" in str(err.value)
    assert "ULTRAFORGE_TEST_MISSING_KEY" in str(err.value)
    assert secret not in str(err.value)


def test_key_from_env_is_hidden_when_printed(monkeypatch):
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("ULTRAFORGE_TEST_KEY", secret)
    value = secret_from_env("ULTRAFORGE_TEST_KEY", owner="endpoint 'openai'")
    assert value.get_secret_value() == secret
    assert secret not in f"{value} {value!r}"


def test_keys_may_come_from_a_dotenv_file_and_settings_never_print_secrets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UF_DOTENV_KEY", raising=False)
    (tmp_path / ".env").write_text("UF_DOTENV_KEY=sk-from-dotenv-0123\n"
                                   "ULTRAFORGE_S3_SECRET_ACCESS_KEY=s3-secret-4567\n")
    assert secret_from_env("UF_DOTENV_KEY", owner="x").get_secret_value() == "sk-from-dotenv-0123"
    settings = Settings()
    assert settings.s3_secret_access_key.get_secret_value() == "s3-secret-4567"
    assert "s3-secret-4567" not in f"{settings} {settings!r} {settings.model_dump()}"


def test_batch_route_pays_half_the_online_price_by_default_and_the_configured_share_otherwise(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text(GOOD_ENDPOINT + "models:\n"
                    "  half: {endpoint: local, price: {input_per_mtok: 2, output_per_mtok: 8}}\n"
                    "  fifth: {endpoint: local, price: {input_per_mtok: 2, output_per_mtok: 8,"
                    " batch_share: 0.2}}\n")
    pool = PoolConfig.load(path)
    assert pool.cost("half", 1_000_000, 1_000_000) == pool.cost("half", 1_000_000, 1_000_000, "online") == 10
    assert pool.cost("half", 1_000_000, 1_000_000, route="batch") == 5
    assert pool.cost("fifth", 1_000_000, 1_000_000, route="batch") == pytest.approx(2)
    bad = GOOD_ENDPOINT + "models:\n  m: {endpoint: local, price: {batch_share: 1.5}}\n"
    assert "models.m.price.batch_share" in _load_error(tmp_path, bad)
