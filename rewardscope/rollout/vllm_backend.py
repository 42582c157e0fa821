"""Sampling with vLLM (the optional extra `rewardscope[vllm]`): offline `LLM.generate`, prefix caching on.

The same contract as `rewardscope.rollout.hf.generate`, so the stage writes the same columns: prompts go in as
token ids (the ids the HF backend would use) and responses are decoded by the same Hugging Face tokenizer.
Each prompt's draws are seeded from (seed, prompt index), so they do not depend on how vLLM schedules its
batches. Sampling is exactly temperature + top-p: top_k, min_p and penalties are set to neutral explicitly.
No hooks here: vLLM runs CUDA graphs, where hooks do not fire; the `capture` stage captures states with a
teacher-forced Hugging Face forward instead.
"""

from __future__ import annotations

from rewardscope.errors import RewardscopeError
from rewardscope.models import load_tokenizer, resolve_model_path
from rewardscope.rollout.hf import DEFAULTS, Generation, check_sampling, derive_seed

_FINISH = {"stop": "eos", "length": "length"}  # vLLM's "stop" is EOS or a generation-config stop token


def _vllm():
    try:
        import vllm
    except ImportError:
        raise RewardscopeError("rollout.backend 'vllm' needs vLLM: pip install 'rewardscope[vllm]'") from None
    return vllm


def load(cfg):
    """(vllm.LLM, Hugging Face tokenizer) from a `ModelConfig`. vLLM picks the GPU itself (cfg.device unused)."""
    llm = _vllm().LLM(
        model=resolve_model_path(cfg.name, cfg.gguf_file, cfg.revision),
        revision=cfg.revision,
        dtype=cfg.dtype,  # "auto": the checkpoint's own dtype
        trust_remote_code=cfg.trust_remote_code,
        enable_prefix_caching=True,  # the n samples of a prompt share its KV cache
    )
    return llm, load_tokenizer(cfg.name, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                               gguf_file=cfg.gguf_file)


def generate(
    llm,
    tokenizer,
    prompts: list[str],
    *,
    n: int = DEFAULTS.n,
    temperature: float = DEFAULTS.temperature,
    top_p: float = DEFAULTS.top_p,
    max_new_tokens: int = DEFAULTS.max_new_tokens,
    seed: int | None = None,
) -> list[list[Generation]]:
    """n Generations per prompt, in prompt order; temperature 0 is greedy. vLLM batches by itself. Defaults: the
    recipe's (RolloutConfig), as for hf.generate."""
    check_sampling(n, temperature, top_p, max_new_tokens)
    SamplingParams = _vllm().SamplingParams
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    params = [
        SamplingParams(
            n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
            seed=None if seed is None else derive_seed(seed, i),
            top_k=-1, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
        )
        for i in range(len(prompts))
    ]
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
    results = []
    for ids, request in zip(prompt_ids, outputs):
        completions = sorted(request.outputs, key=lambda c: c.index)
        results.append([_generation(ids, c, tokenizer) for c in completions])
    return results


def _generation(prompt_ids: list[int], completion, tokenizer) -> Generation:
    if completion.finish_reason not in _FINISH:
        raise RewardscopeError(f"vLLM finished a sequence with {completion.finish_reason!r}; expected stop or length")
    response = list(completion.token_ids)  # ends with the EOS / stop token when finished by it
    text = tokenizer.decode(response, skip_special_tokens=True)
    return Generation(list(prompt_ids), response, text, _FINISH[completion.finish_reason])
