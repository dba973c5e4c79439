"""The causal-LM runner: KV rows joined and dropped between steps compute what a lone sequence
computes, and the operator's hub-style folder loads through the real Auto-class path."""

import pytest

from schemas.errors import ConfigurationError
from schemas.settings import Settings
from tests.tiny_models import greedy_alone, tiny_causal_lm
from workers.core.runners import load_runner
from workers.core.runners.causal import CausalLM


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return tiny_causal_lm()


def test_rows_joined_mid_way_and_dropped_compute_what_they_would_alone(lm):
    long, short = lm.tokenize(["the weather in lisbon is lovely today", "hi"])
    want_long, want_short = greedy_alone(lm, long, 13), greedy_alone(lm, short, 9)
    logits, kv = lm.prefill([long])
    got_long = [int(logits[0].argmax())]
    for _ in range(3):
        logits, kv = lm.decode(kv, [got_long[-1]])
        got_long.append(int(logits[0].argmax()))
    logits, joining = lm.prefill([short])  # a shorter prompt joins a longer running row
    got_short = [int(logits[0].argmax())]
    kv = kv.join(joining)
    assert kv.rows == 2 and kv.mask[1].tolist().count(0) == kv.length - len(short)  # left-padded
    for _ in range(8):
        logits, kv = lm.decode(kv, [got_long[-1], got_short[-1]])
        got_long.append(int(logits[0].argmax()))
        got_short.append(int(logits[1].argmax()))
    assert got_short == want_short
    kv = kv.keep([0])  # the short one leaves; its padding columns go with it
    assert kv.rows == 1 and bool(kv.mask.all())
    logits, kv = lm.decode(kv, [got_long[-1]])
    got_long.append(int(logits[0].argmax()))
    assert got_long == want_long
    assert int(kv.positions[0]) == len(long) + len(got_long) - 1


def test_prompts_start_with_bos_and_never_end_with_the_separator(lm):
    (ids,) = lm.tokenize(["hello there"])
    assert ids[0] == lm.bos_id and ids[-1] not in lm.eos_ids
    assert lm.detokenize(ids) == "hello there"


def test_an_operator_folder_loads_through_the_auto_classes(lm, tmp_path):
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    s = Settings(torch_threads=1, device="cpu", generate_model_dir=str(tmp_path))
    folder = load_runner("causal-lm", s)
    assert isinstance(folder, CausalLM) and folder.version.startswith("causal-lm@")
    assert folder.eos_ids == lm.eos_ids and folder.bos_id == lm.bos_id
    prompt = lm.tokenize(["same weights, same words"])[0]
    assert folder.tokenize(["same weights, same words"])[0] == prompt
    assert greedy_alone(folder, prompt, 6) == greedy_alone(lm, prompt, 6)


def test_causal_lm_without_a_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="INFERQ_GENERATE_MODEL_DIR"):
        load_runner("causal-lm", Settings())
    with pytest.raises(ConfigurationError, match=r"config\.json"):
        load_runner("causal-lm", Settings(generate_model_dir=str(tmp_path)))
