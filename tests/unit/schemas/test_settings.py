from pathlib import Path

import pytest

from schemas.settings import ENV_PREFIX, Settings, port_of

README = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented_in_the_readme(field):
    assert f"`{ENV_PREFIX}{field.upper()}`" in README


def test_settings_come_from_prefixed_environment(monkeypatch):
    monkeypatch.setenv("INFERQ_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("INFERQ_WORKER_MODELS", " a , b,")
    s = Settings()
    assert s.max_batch_size == 7 and s.model_names() == ["a", "b"]


def test_port_of():
    assert port_of("redis://127.0.0.1:6380/1") == 6380
    assert port_of("127.0.0.1:9092,127.0.0.1:9093") == 9092
    with pytest.raises(ValueError):
        port_of("redis://localhost/0")
