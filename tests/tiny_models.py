"""A causal LM built from a config in milliseconds, for tests of decoding logic (no model load).

tiny-lm, the shipped generator, needs MiniLM's tokenizer and embeddings from their package: seconds
and hundreds of MB, which the fast tier does without. What the decoder tests check holds for any
model: a sequence decoded in a batch, joined and left mid-way, computes what it computes alone.

The vocabulary is whole words (a word-level tokenizer: text and ids round-trip), and the only
special token is the BOS word. The model must never produce it (decoding drops special tokens from
the text, so text and tokens would disagree): its row of the output layer is zero, and two other rows
are opposite, so one of those two always scores above it.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from schemas.settings import Settings
from workers.core.runners.causal import CausalLM, _eos_ids
from workers.core.runners.device import configure_threads

BOS, UNK = "<bos>", "unk"
TEXTS = (  # what the tests write: every word of them has its own id
    "the weather in lisbon is lovely today",
    "i want to talk to a human",
    "reset my password",
    "hello there hi",
    "same weights , same words",
    "one two three four five six seven eight nine short",
)
WORDS = [word for text in TEXTS for word in text.split()]
FILLERS = [f"w{i:02d}" for i in range(64)]  # what the model mostly says: enough words for varied text
SEED = 20_261_202


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(dict.fromkeys([BOS, UNK, *WORDS, *FILLERS]))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, clean_up_tokenization_spaces=False)


def _tiny_llama(vocab_size: int, bos: int | None) -> LlamaForCausalLM:
    """A 2-layer Llama-style model of ``vocab_size`` words, the same weights on every call (seeded)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=bos,
        eos_token_id=None,
        pad_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return LlamaForCausalLM(config)


def tiny_causal_lm(name: str = "tiny-lm") -> CausalLM:
    """A 2-layer Llama-style model over :func:`tiny_tokenizer`, on the CPU, the same on every call."""
    configure_threads(Settings(torch_threads=1))
    tokenizer = tiny_tokenizer()
    bos = int(tokenizer.bos_token_id)
    model = _tiny_llama(len(tokenizer), bos)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        a, b = [i for i in range(len(tokenizer)) if i != bos][:2]  # the first two words but BOS
        head[b] = -head[a]
        head[bos] = 0.0
    return CausalLM(name, model, tokenizer, torch.device("cpu"), f"{name}@config", bos_id=bos)


# a ChatML-style template, as SmolLM2's: each turn between control tokens, the answer's turn opened
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def tiny_chat_tokenizer() -> PreTrainedTokenizerFast:
    """:func:`tiny_tokenizer`'s words with the template's roles and control tokens; ``<|im_end|>`` has
    id 0 (so a model whose output layer is zero picks it: every logit ties, argmax takes the first)."""
    words = [IM_END, BOS, UNK, IM_START, "system", "user", "assistant", *WORDS, *FILLERS]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=IM_END,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_chat_lm(ends_turn: bool = False) -> CausalLM:
    """A chat model over :func:`tiny_chat_tokenizer`, its end of sequence taken as a real loader does.
    ``ends_turn``: its output layer is zero, so it ends its turn at once (greedy)."""
    configure_threads(Settings(torch_threads=1))
    tokenizer = tiny_chat_tokenizer()
    model = _tiny_llama(len(tokenizer), None)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        if ends_turn:
            head.zero_()
        else:  # never the control tokens or BOS: their rows score below a pair of opposite rows
            for t in (IM_END, IM_START, BOS):
                head[tokenizer.convert_tokens_to_ids(t)] = 0.0
            a, b = tokenizer.convert_tokens_to_ids(["system", "user"])
            head[b] = -head[a]
    return CausalLM(
        "tiny-chat",
        model,
        tokenizer,
        torch.device("cpu"),
        "tiny-chat@config",
        eos_ids=_eos_ids(model, tokenizer),
    )


def greedy_alone(lm: CausalLM, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation of token ids ``prompt`` by ``n`` tokens, unbatched: the reference that
    batched decoding must reproduce."""
    ids, out = torch.tensor([prompt]), []
    with torch.inference_mode():
        for _ in range(n):
            out.append(int(lm.model(input_ids=ids).logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[out[-1]]])], 1)
    return out
