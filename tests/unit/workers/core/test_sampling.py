"""Token choice and stop sequences (pure logic)."""

import torch

from schemas.messages import GenerationParams
from workers.core.sampling import Sampler, StopText, nucleus, pick_tokens


def test_greedy_is_argmax_and_rows_keep_their_own_rule():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 0.0, 0.0]])
    greedy, sampled = Sampler(), Sampler(temperature=1.0, seed=1)
    assert pick_tokens(logits, [greedy, greedy]) == [1, 0]
    assert pick_tokens(logits, [greedy, sampled])[0] == 1


def test_a_seed_gives_the_same_tokens_whatever_else_is_drawn():
    logits = torch.randn(50)
    a = Sampler(temperature=1.0, seed=42)
    b = Sampler(temperature=1.0, seed=42)
    other = Sampler(temperature=1.0, seed=7)
    first = [a.pick(logits) for _ in range(20)]
    drawn = []
    for _ in range(20):
        other.pick(logits)  # a neighbour drawing in between must not change b's stream
        drawn.append(b.pick(logits))
    assert first == drawn
    assert [other.pick(logits) for _ in range(20)] != first


def test_each_input_of_a_seeded_request_gets_its_own_stream():
    params = GenerationParams(temperature=1.0, seed=3)
    logits = torch.randn(100)
    s0, s1 = Sampler.for_request(params, 0), Sampler.for_request(params, 1)
    assert [s0.pick(logits) for _ in range(10)] != [s1.pick(logits) for _ in range(10)]


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert torch.allclose(nucleus(probs, 0.7), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(nucleus(probs, 0.1), torch.tensor([1.0, 0.0, 0.0, 0.0]))  # the best always stays
    only_top = Sampler(temperature=1.0, top_p=0.01, seed=0)
    assert {only_top.pick(torch.log(probs)) for _ in range(30)} == {0}


def test_temperature_near_zero_is_almost_greedy_and_high_spreads():
    logits = torch.tensor([2.0, 1.0, 0.0])
    cold = Sampler(temperature=0.01, seed=0)
    hot = Sampler(temperature=5.0, seed=0)
    assert {cold.pick(logits) for _ in range(50)} == {0}
    assert len({hot.pick(logits) for _ in range(200)}) == 3


def test_stop_text_cuts_before_the_first_stop_sequence():
    stop = StopText(["\n\n", "END"])
    assert stop.update("hello wor") == ("hello wor", False)
    assert stop.update("hello world EN") == ("hello world ", False)  # "EN" may become "END": held back
    assert stop.update("hello world ENd more") == ("hello world ENd more", False)  # it did not
    assert stop.update("hello world ENd more END and after") == ("hello world ENd more ", True)


def test_stop_text_finds_a_stop_spanning_two_updates_and_the_earliest_of_several():
    stop = StopText(["xyz", "b"])
    assert stop.update("aaax") == ("aaa", False)
    assert stop.update("aaaxyz b") == ("aaa", True)
    assert StopText(["cd", "bc"]).update("abcd") == ("a", True)


def test_stop_text_without_stops_only_holds_a_half_character():
    assert StopText([]).update("caf\ufffd") == ("caf", False)
    assert StopText([]).update("café") == ("café", False)
