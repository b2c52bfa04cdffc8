"""Tiny word-level tokenizers built in memory (no downloads) for the generative data tests.

Every word, space and punctuation mark is one token, so golden ids can be written out by hand from ``WORDS``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# id = position in the list
WORDS = [
    "<pad>", "<|im_end|>", "<|im_start|>", "<s>", "[UNK]", "user", "assistant", "system", "\n", " ",   # 0-9
    "?", ".", "!", "What", "is", "the", "capital", "of", "France", "Paris",                            # 10-19
    "Hi", "Hello", "Bye", "Be", "nice", "Translate", "cat", "chat", "</s>", ":",                       # 20-29
]  # fmt: skip
ID = {w: i for i, w in enumerate(WORDS)}

# ChatML without a default system prompt
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(*, chat: bool = True, bos: bool = False, t5: bool = False) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: EOS ``<|im_end|>`` (1), pad ``<pad>`` (0).

    Args:
        chat: give it the ChatML template above.
        bos: prepend ``<s>`` (3) to every text, as Llama tokenizers do.
        t5: append ``</s>`` (28) to every text and use it as EOS, as T5 tokenizers do.
    """
    tk = Tokenizer(models.WordLevel(dict(ID), unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\s"), behavior="isolated")
    if bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", ID["<s>"])]
        )
    if t5:
        tk.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", ID["</s>"])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        eos_token="</s>" if t5 else "<|im_end|>",
        pad_token="<pad>",
        unk_token="[UNK]",
        bos_token="<s>" if bos else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat:
        tok.chat_template = CHATML
    return tok
