import pytest

from schemas.settings import Settings, port_of

# Every setting is documented in docs/configuration.md, generated from the field descriptions:
# tests/unit/ops/test_reference.py checks both.


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
