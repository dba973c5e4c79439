"""Runners on a tiny config-built BERT: the encoder, the head and the device choice without a model
load (the shipped models load in tests/integration/models/test_shipped_models.py)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from transformers import BertConfig, BertModel, BertTokenizerFast

from schemas.errors import ConfigurationError, UnknownModel
from schemas.messages import InferenceRequest
from schemas.settings import Settings
from workers.core.runners import load_runner
from workers.core.runners.classify import HeadClassifier
from workers.core.runners.device import choose_device
from workers.core.runners.embed import HFEncoder

WORDS = ["hello", "world", "how", "are", "you", "talk", "to", "a", "human", "weather"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return HFEncoder("tiny", tiny_folder, torch.device("cpu"), max_length_tokens=8)


def req(**kw):
    return InferenceRequest(task="embed", model="tiny", inputs="x", **kw)


def test_embeddings_are_unit_norm_and_padding_does_not_change_them(tiny):
    short, long = tiny.tokenize(["hello", "how are you world hello"])
    together = tiny.forward([short, long])
    alone = tiny.forward([short])
    assert together.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)  # padding is masked out
    out = tiny.output(together[0], req())
    assert len(out.model_dump()["embedding"]) == 16


def test_inputs_are_truncated_to_the_token_limit(tiny):
    assert [len(ids) for ids in tiny.tokenize([" ".join(WORDS * 5), "hi"])] == [8, 3]
    assert tiny.tokenize([]) == []


def test_version_is_stamped_from_the_weights(tiny, tiny_folder):
    assert tiny.version.startswith("tiny@") and len(tiny.version) == len("tiny@") + 12


def test_a_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError):
        HFEncoder("nothing", tmp_path, torch.device("cpu"), 8)


def test_the_traced_graph_matches_eager_mode_on_shapes_it_was_not_traced_with(tiny, tiny_folder):
    eager = HFEncoder("tiny", tiny_folder, torch.device("cpu"), max_length_tokens=8, graph=False)
    assert tiny.graph and not eager.graph
    texts = ["hello", "how are you", "talk to a human", "weather weather", "you", "hello world how are"]
    for batch in ([tiny.tokenize(texts[:1])[0]], tiny.tokenize(texts[:3]), tiny.tokenize(texts)):
        np.testing.assert_allclose(tiny.forward(batch), eager.forward(batch), atol=1e-5)


def test_an_encoder_the_tracer_cannot_follow_runs_eagerly(tiny_folder, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    enc = HFEncoder("tiny", tiny_folder, torch.device("cpu"), max_length_tokens=8)
    assert not enc.graph
    assert enc.forward(enc.tokenize(["hello world"])).shape == (1, 16)


def test_a_trace_that_does_not_match_eager_mode_is_not_used(tiny_folder, monkeypatch):
    class Wrong(torch.nn.Module):
        def forward(self, ids, mask):
            return torch.zeros((ids.shape[0], 16))

    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: Wrong())
    enc = HFEncoder("tiny", tiny_folder, torch.device("cpu"), max_length_tokens=8)
    assert not enc.graph
    np.testing.assert_allclose(np.linalg.norm(enc.forward(enc.tokenize(["hello"])), axis=1), 1.0, atol=1e-5)


def test_head_classifier_returns_top_k_best_first(tiny):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))
    y = np.repeat(["a", "b", "c"], 20)
    head = LogisticRegression(max_iter=200).fit(x, y)
    clf = HeadClassifier("tiny-intent", tiny, head, ["a", "b", "c"], "deadbeef")
    rows = clf.forward(tiny.tokenize(["hello world", "human"]))
    assert rows.shape == (2, 3)
    out = clf.output(rows[0], InferenceRequest(task="classify", model="tiny-intent", inputs="x", top_k=2))
    assert len(out.labels) == 2 and out.labels[0].score >= out.labels[1].score
    assert clf.version == f"tiny-intent@{tiny.version.split('@')[1]}+deadbeef"


def test_device_auto_picks_cpu_without_cuda():
    if torch.cuda.is_available():
        assert choose_device(Settings(device="auto")).type == "cuda"
    else:
        assert choose_device(Settings(device="auto")).type == "cpu"
        with pytest.raises(ConfigurationError):
            choose_device(Settings(device="cuda"))


def test_unknown_model_cannot_be_loaded():
    with pytest.raises(UnknownModel):
        load_runner("no-such-model", Settings())


def test_every_catalogue_model_has_a_loader_that_imports():
    """The catalogue (schemas) and the worker's loaders name the same models, and each loader
    resolves to a function (without loading any weights)."""
    import importlib

    from schemas.catalog import CATALOG
    from workers.core.runners import LOADERS

    assert set(LOADERS) == set(CATALOG)
    for spec in LOADERS.values():
        module, _, func = spec.partition(":")
        assert callable(getattr(importlib.import_module(module), func))
