"""Tokenizer for the engine: a `tokenizers` tokenizer from `tokenizer.json` or from GGUF metadata,
with the chat template, stop tokens, and incremental (streaming-safe) detokenization."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# Tokens that end a turn in the chat formats we serve, whichever ids the vocabulary gives them.
_TURN_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "[EOS]", "</s>")


class EngineTokenizer:
    def __init__(
        self, tokenizer: Tokenizer, chat_template: str | None, bos_token: str | None, eos_ids: list[int]
    ):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.bos_token = bos_token
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        extra = [vocab[t] for t in _TURN_END_TOKENS if t in vocab]
        self.stop_ids = sorted(set(eos_ids) | set(extra))
        self.eos_token = tokenizer.id_to_token(eos_ids[0]) if eos_ids else None
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, path: Path) -> EngineTokenizer:
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        cfg = _read_json(path / "tokenizer_config.json")
        gen = _read_json(path / "generation_config.json")
        model_cfg = _read_json(path / "config.json")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next(
                (t["template"] for t in template if t.get("name") == "default"), template[0]["template"]
            )
        if template is None and (path / "chat_template.jinja").exists():
            template = (path / "chat_template.jinja").read_text()
        eos_ids = gen.get("eos_token_id", model_cfg.get("eos_token_id"))
        if isinstance(eos_ids, int):
            eos_ids = [eos_ids]
        eos_token = _token_text(cfg.get("eos_token"))
        if not eos_ids and eos_token is not None and tok.token_to_id(eos_token) is not None:
            eos_ids = [tok.token_to_id(eos_token)]
        return cls(tok, template, _token_text(cfg.get("bos_token")), list(eos_ids or []))

    @classmethod
    def from_gguf(cls, reader) -> EngineTokenizer:
        """Rebuild a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`)."""
        fields = reader.fields
        model = bytes(fields["tokenizer.ggml.model"].parts[-1]).decode()
        if model != "gpt2":
            raise ValueError(f"GGUF tokenizer model {model!r} is not supported (only byte-level BPE 'gpt2')")
        tokens = _strings(fields["tokenizer.ggml.tokens"])
        merges = [tuple(m.split(" ", 1)) for m in _strings(fields["tokenizer.ggml.merges"])]
        types = [
            int(fields["tokenizer.ggml.token_type"].parts[i][0])
            for i in fields["tokenizer.ggml.token_type"].data
        ]
        vocab = {t: i for i, t in enumerate(tokens)}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        pre = bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() if "tokenizer.ggml.pre" in fields else ""
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre in ("smollm", "starcoder", "refact", "deepseek-coder", "llama3", "llama-bpe"):
            # These pre-tokenizers split digits one by one before the GPT-2 regex.
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Digits(individual_digits=True), byte_level]
            )
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        # Control (3) and user-defined (4) tokens must match whole, never be split by BPE.
        tok.add_special_tokens(
            [
                AddedToken(tokens[i], special=True, normalized=False)
                for i, t in enumerate(types)
                if t in (3, 4)
            ]
        )
        eos = _scalar(fields.get("tokenizer.ggml.eos_token_id"))
        bos = _scalar(fields.get("tokenizer.ggml.bos_token_id"))
        template = None
        if "tokenizer.chat_template" in fields:
            template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
        return cls(tok, template, tokens[bos] if bos is not None else None, [eos] if eos is not None else [])

    def encode(self, text: str) -> list[int]:
        # Chat templates already spell out BOS and role tokens, so nothing is added here.
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


class IncrementalDetokenizer:
    """Turns a growing token list into text deltas without re-decoding everything, and holds back
    bytes of an unfinished UTF-8 character (decoded as U+FFFD) until the next token completes it."""

    def __init__(self, tokenizer: EngineTokenizer, prompt_tail: list[int]):
        self.tokenizer = tokenizer
        self.tokens = list(prompt_tail[-4:])  # a little context so leading spaces decode correctly
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)

    def add(self, token: int) -> str:
        self.tokens.append(token)
        prefix = self.tokenizer.decode(self.tokens[self.prefix_offset : self.read_offset])
        full = self.tokenizer.decode(self.tokens[self.prefix_offset :])
        if full.endswith("\ufffd") or len(full) <= len(prefix):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return full[len(prefix) :]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _token_text(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


def _strings(field) -> list[str]:
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


def _scalar(field):
    return None if field is None else int(field.parts[-1][0])
