"""Tokenizers: the base folder's Qwen2.5 tokenizer, or our byte-level one for small models.

Both are transformers `PreTrainedTokenizerFast`, so everything downstream (chat prompts,
special-token ids, decode) is one code path. The byte tokenizer maps every UTF-8 byte to one
id (0-255), then the chat/vision specials, so it accepts any text in any script.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..config import SHAPES_SPECIAL_TOKENS

SPECIALS = ("<|vision_start|>", "<|vision_pad|>", "<|image_pad|>", "<|vision_end|>", "<|fim_pad|>",
            "<|im_start|>", "<|im_end|>")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    # ByteLevel maps bytes to printable unicode stand-ins; a BPE with no merges keeps one id per byte.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = sorted(alphabet, key=lambda c: _bytelevel_byte(c))
    vocab = {ch: i for i, ch in enumerate(byte_to_char)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SHAPES_SPECIAL_TOKENS))  # ids 256.. in config order
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    for i, t in enumerate(SHAPES_SPECIAL_TOKENS):  # ids must match config.SHAPES_BASE
        assert fast.convert_tokens_to_ids(t) == 256 + i, t
    return fast


def _bytelevel_byte(ch: str) -> int:
    """Inverse of GPT-2's bytes_to_unicode for one character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(map(chr, cs), bs))[ch]


def load_tokenizer(kind: str, folder: str | None = None) -> PreTrainedTokenizerFast:
    if kind == "bytes":
        return byte_tokenizer()
    if folder is None:
        raise ValueError("a Qwen2.5-VL tokenizer needs the base model folder (ar.base_path)")
    from .base_file import tokenizer_folder  # a folder's own, or ComfyUI's for a text-encoder file
    return AutoTokenizer.from_pretrained(tokenizer_folder(folder), local_files_only=True)


class ChatFormat:
    """Builds the chat-formatted token ids the release builds with `apply_chat_template`.

    Written out rather than templated so that the byte tokenizer and the Qwen tokenizer give
    the same structure, and so the editing path can find "the position after `user\\n`".
    """

    def __init__(self, tokenizer, system_prompt: str | None):
        self.tok = tokenizer
        self.system = system_prompt
        self.ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def user_prefix(self) -> list[int]:
        """Tokens up to and including '<|im_start|>user\\n' (where the release inserts images)."""
        s = ""
        if self.system:
            s += f"<|im_start|>system\n{self.system}<|im_end|>\n"
        return self.encode(s + "<|im_start|>user\n")

    def assistant_prefix(self) -> list[int]:
        return self.encode("<|im_end|>\n<|im_start|>assistant\n")

    def prompt(self, text: str) -> tuple[list[int], list[int], list[int]]:
        """(prefix, user text, suffix) of a one-turn chat; the caller joins them."""
        return self.user_prefix(), self.encode(text), self.assistant_prefix()

    def decode(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)
