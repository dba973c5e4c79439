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


def test_a_worker_serving_generate_holds_enough_messages_to_fill_its_running_batch():
    embed_only = Settings(worker_models="all-MiniLM-L6-v2,minilm-intent", worker_concurrency=16)
    assert embed_only.celery_threads() == 16
    gen = Settings(worker_models="all-MiniLM-L6-v2,tiny-lm", worker_concurrency=16, generate_max_running=32)
    assert gen.celery_threads() == 40  # every sequence being decoded holds its message
    assert Settings(worker_models="tiny-lm", worker_concurrency=100).celery_threads() == 100
    small = Settings(worker_models="tiny-lm@int8", worker_concurrency=4, generate_max_running=2)
    assert small.celery_threads() == 10


def test_a_worker_serving_two_generate_builds_holds_messages_to_fill_both_batches():
    two = Settings(worker_models=" tiny-lm , smollm2-135m-instruct,all-MiniLM-L6-v2", generate_max_running=32)
    assert two.celery_threads() == 2 * 32 + 8  # each build has its own decoder of 32
    assert Settings(worker_models="tiny-lm,tiny-lm@int8", generate_max_running=4).celery_threads() == 16
    assert Settings(worker_models="tiny-lm,tiny-lm", generate_max_running=4).celery_threads() == 16
    assert Settings(worker_models="nope,,  ", worker_concurrency=3).celery_threads() == 3


def test_a_prefill_chunk_may_not_be_asked_to_cost_less_than_a_step():
    assert Settings(generate_prefill_stall_steps=0).generate_prefill_stall_steps == 0
    assert Settings(generate_prefill_stall_steps=1.5).generate_prefill_stall_steps == 1.5
    with pytest.raises(ValueError, match="at least 1"):
        Settings(generate_prefill_stall_steps=0.5)
