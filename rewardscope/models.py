"""Loading models and tokenizers, the same path for hub ids, local folders and the shipped demo organism.

Also `pad_batch`, the one way model inputs are padded (generation left-pads, the capture right-pads).

Also the tiny randomly initialised configs of real architectures that tests and benchmarks use (no download).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from rewardscope.errors import RewardscopeError

DEMO_MODEL_DIR = Path(__file__).parent / "organism" / "weights"  # "demo": the flagger
DEMO_CORRECTOR_DIR = Path(__file__).parent / "organism" / "weights_corrector"  # "demo-corrector"
# The organisms shipped in the package, by the names recipes give them (`model.name`), with the command that
# writes each one.
DEMO_MODELS = {
    "demo": (DEMO_MODEL_DIR, "rewardscope demo-model train"),
    "demo-corrector": (DEMO_CORRECTOR_DIR, "rewardscope demo-model train --variant corrector"),
}

TINY_HIDDEN = 256  # at or below this width, one CPU thread beats several (synchronisation dominates)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """`model.device` as a torch device that exists here; a missing GPU fails now, with the reason, not in the
    middle of a stage."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise RewardscopeError(f"model.device: {device!r} is not a device (auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "no GPU is visible" if torch.version.cuda else f"torch {torch.__version__} is built without CUDA"
            raise RewardscopeError(f"model.device: {device!r} but CUDA is not available ({why}); "
                                   f"use model.device=cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RewardscopeError(f"model.device: {device!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise RewardscopeError(f"model.device: {device!r} but MPS is not available here; use model.device=cpu or auto")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise RewardscopeError(f"model.device: {device!r}: only cpu, cuda and mps are supported")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory on GPUs; CPUs run fp32 fastest and exactly.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise RewardscopeError(f"dtype {dtype!r}: expected one of {['auto', *_DTYPES]}")
    return _DTYPES[dtype]


def resolve_model_path(name: str, gguf_file: str | None = None, revision: str | None = None) -> str:
    """'demo' (the flagger), 'demo-corrector' -> the organism inside the package (DEMO_MODELS); a GGUF source
    (`gguf_file`, or a named packaged model such as "smollm2-135m-instruct") -> its dequantized safetensors copy,
    converted on first use (rewardscope.gguf); anything else is passed to from_pretrained unchanged."""
    from rewardscope import gguf

    if gguf.is_gguf_source(name, gguf_file):
        return str(gguf.converted(name, gguf_file, revision))
    if name in DEMO_MODELS:
        folder, command = DEMO_MODELS[name]
        if not (folder / "config.json").exists():
            raise RewardscopeError(f"the demo organism {name!r} is missing from {folder}: train it with `{command}`")
        return str(folder)
    return name


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_FULL_HASH_BYTES = 64 << 20  # weight files up to this size are hashed whole; larger ones are sampled
_SAMPLE_BYTES = 1 << 20


def model_fingerprint(name: str, revision: str | None = None, gguf_file: str | None = None) -> str | None:
    """A short identity of the weights `name` loads, so that a run directory refuses to mix two models.

    A recipe names a model, not its weights: a local folder retrained in place, or a hub branch that moved, keeps
    its name. Local folders (and "demo", "demo-corrector"): sha256 over config.json and each weight file's name,
    size and bytes (whole up to 64 MiB; beyond, 1 MiB at the start, middle and end: retrained or replaced weights
    change them, and a 28 GB checkpoint is not read in full). Hub ids: "hub:<commit>" of the cached snapshot for
    `revision`, or None when nothing is cached yet (then nothing can be compared). GGUF sources:
    "gguf:<sha256[:16]>" of the GGUF file; its dequantized copy in the cache (the folder a model object loaded
    from a GGUF source names) has that fingerprint too, so the two ways of naming one model do not refuse each other.
    """
    from rewardscope import gguf

    if gguf.is_gguf_source(name, gguf_file):
        return gguf.fingerprint(name, gguf_file, revision)
    path = Path(resolve_model_path(name))
    if path.is_dir() and (source := gguf.converted_from(path)) is not None:
        return "gguf:" + source[:16]
    if path.is_dir():
        digest = hashlib.sha256()
        files = [p for p in sorted(path.iterdir()) if p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES]
        for file in files:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}\0".encode())
            with file.open("rb") as f:
                if size <= _FULL_HASH_BYTES:
                    digest.update(f.read())
                else:
                    for offset in (0, size // 2, size - _SAMPLE_BYTES):
                        f.seek(offset)
                        digest.update(f.read(_SAMPLE_BYTES))
        return "sha256:" + digest.hexdigest()[:16]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # an id the hub library rejects: loading will report it
        return None
    return f"hub:{Path(cached).parent.name}" if isinstance(cached, str) else None


def load_config(cfg):
    """The text config (layers, width, context) of a `ModelConfig`'s model, without loading its weights."""
    from transformers import AutoConfig

    try:
        path = resolve_model_path(cfg.name, cfg.gguf_file, cfg.revision)
        config = AutoConfig.from_pretrained(path, revision=None if cfg.gguf_file else cfg.revision,
                                            trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise RewardscopeError(f"cannot load the config of model {cfg.name!r}: {e}") from None
    return config.get_text_config()


def context_length(model) -> int | None:
    """The most positions (prompt + response) `model` was built for, or None if its config does not say.

    A Hugging Face model: its config's max_position_embeddings (GPT-2's n_positions); a vllm.LLM: max_model_len."""
    engine = getattr(model, "llm_engine", None)
    if engine is not None:
        return getattr(getattr(engine, "model_config", None), "max_model_len", None)
    config = model.config.get_text_config() if hasattr(model, "config") else None
    return getattr(config, "max_position_embeddings", None)


def pad_batch(sequences, pad_id: int, padding_side: str, device=None) -> tuple[dict, list[int]]:
    """Model inputs of a padded batch of token-id sequences (lists or arrays), and where each one starts in its row.

    Returns ({input_ids, attention_mask, position_ids}, starts): [batch, longest] long tensors on `device` (None:
    the CPU). `padding_side` "left" (generation: every row ends at the same column, where new tokens go) or "right"
    (the capture's default). Position ids come from the attention mask (cumsum - 1, pads at 0), so a left-padded
    sequence still has positions 0, 1, ...; `generate` builds the same ones itself from the mask."""
    if padding_side not in ("left", "right"):
        raise RewardscopeError(f"padding_side: {padding_side!r} is not 'left' or 'right'")
    if not len(sequences):
        raise RewardscopeError("pad_batch: no sequences")
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    starts = []
    for b, seq in enumerate(sequences):
        start = width - len(seq) if padding_side == "left" else 0
        input_ids[b, start : start + len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[b, start : start + len(seq)] = 1
        starts.append(start)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = dict(input_ids=input_ids, attention_mask=mask, position_ids=position_ids)
    return ({k: v.to(device) for k, v in inputs.items()} if device is not None else inputs), starts


def load_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False,
                   gguf_file: str | None = None):
    from transformers import AutoTokenizer

    from rewardscope import gguf

    path = resolve_model_path(name, gguf_file, revision)
    if gguf.is_gguf_source(name, gguf_file):
        revision = None  # `path` is the converted copy, a local folder
    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RewardscopeError(f"cannot load tokenizer {name!r}: {e}") from None
    # Decoder-only generation needs left padding; models without a pad token pad with EOS (masked anyway).
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name: str,
    revision: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    threads: int | None = None,
    gguf_file: str | None = None,
):
    """(model, tokenizer) in eval mode on `device`, from a hub id, a local folder, "demo", a GGUF file
    (`gguf_file`) or a named packaged model (rewardscope.gguf.NAMED_MODELS), GGUF dequantized to `dtype`.

    On CPU, `threads` sets torch's (process-wide) thread count; None picks 1 for tiny models (see ModelConfig)."""
    import time

    from transformers import AutoModelForCausalLM

    from rewardscope import gguf

    dev = resolve_device(device)
    path = resolve_model_path(name, gguf_file, revision)
    from_gguf = gguf.is_gguf_source(name, gguf_file)  # then `path` is the converted copy: a local folder
    kwargs = dict(revision=None if from_gguf else revision, dtype=resolve_dtype(dtype, dev),
                  trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    start = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise RewardscopeError(f"cannot load model {name!r}: {e}") from None
    if from_gguf:
        gguf.record_load(path, time.perf_counter() - start, str(kwargs["dtype"]).removeprefix("torch."))
    model.to(dev).eval()
    if dev.type == "cpu":
        if threads is None and getattr(model.config.get_text_config(), "hidden_size", 1 << 30) <= TINY_HIDDEN:
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)
    tok = load_tokenizer(name, revision=revision, trust_remote_code=trust_remote_code, gguf_file=gguf_file)
    return model, tok


def load_from_config(cfg) -> tuple:
    """(model, tokenizer) from a `ModelConfig`."""
    return load_model(cfg.name, cfg.revision, cfg.dtype, cfg.device, cfg.trust_remote_code, cfg.attn_implementation,
                      cfg.threads, gguf_file=cfg.gguf_file)


# ----------------------------------------------------------------------------------------------------------
# Tiny random models of real architectures (tests and benchmarks; nothing is downloaded)

TINY_ARCHITECTURES = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "mistral", "gpt2", "gpt_neox")


@dataclass(frozen=True)
class TinySpec:
    hidden: int = 64
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128


def tiny_config(arch: str, vocab_size: int, spec: TinySpec = TinySpec(), **overrides):
    """A transformers config of `arch` with a few layers and a small width."""
    import transformers as tf

    h, n, a, kv, ff = spec.hidden, spec.layers, spec.heads, spec.kv_heads, spec.intermediate
    common = dict(vocab_size=vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    llama_like = dict(
        hidden_size=h, num_hidden_layers=n, num_attention_heads=a, num_key_value_heads=kv,
        intermediate_size=ff, max_position_embeddings=512, tie_word_embeddings=False,
    )
    if arch == "llama":
        cfg = tf.LlamaConfig(**llama_like, **common)
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(**llama_like, **common)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**llama_like, head_dim=h // a, **common)
    elif arch == "phi3":
        cfg = tf.Phi3Config(**llama_like, **common)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**llama_like, **common)
    elif arch == "gemma2":
        cfg = tf.Gemma2Config(**llama_like, head_dim=h // a, **common)
    elif arch == "gemma3":
        cfg = tf.Gemma3TextConfig(**llama_like, head_dim=h // a, sliding_window=16, **common)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=h, n_layer=n, n_head=a, n_inner=ff, n_positions=512, **common)
    elif arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            hidden_size=h, num_hidden_layers=n, num_attention_heads=a, intermediate_size=ff,
            max_position_embeddings=512, **common,
        )
    else:
        raise RewardscopeError(f"tiny architecture {arch!r}: expected one of {TINY_ARCHITECTURES}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str, tokenizer, seed: int = 0, spec: TinySpec = TinySpec(), **overrides):
    """A randomly initialised tiny `arch` model sized for `tokenizer`, in eval mode on CPU."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, vocab_size=len(tokenizer), spec=spec, **overrides)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model.eval()
