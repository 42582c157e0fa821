"""Step boundaries: which token of a response ends each step (paragraph, or line for the organism).

The delimiter is found in the decoded text, then mapped back to tokens, because BPE tokens merge it with
neighbouring text (".\n\n", "\n\nThe"). The token that completes a delimiter is the first k for which the
decoded prefix ids[:k] is long enough to contain it: a binary search over prefix decodes, O(steps log T)
decodes in all, each search starting from the previous step's end.

Rules (docs/artifacts.md): a step ends at the token that completes its delimiter; the last step ends at the
last token before EOS (trailing special tokens are never a step end). Empty steps (nothing but whitespace
before their delimiter, e.g. repeated delimiters) are merged into the step before them; an empty first step
is merged into the one after it. Two steps whose delimiters complete in the same token become one step.
"""

from __future__ import annotations

from rewardscope.errors import RewardscopeError


def step_ends(tokenizer, response_ids: list[int], delimiter: str) -> list[int]:
    """Index into `response_ids` of the last token of each step, strictly increasing."""
    if not delimiter:
        raise RewardscopeError("rollout.step_delimiter: must not be empty")
    special = set(tokenizer.all_special_ids)
    n_tokens = len(response_ids)
    while n_tokens and response_ids[n_tokens - 1] in special:  # EOS (and any padding-like tail)
        n_tokens -= 1
    if n_tokens == 0:
        return []
    ids = list(response_ids[:n_tokens])
    lengths: dict[int, int] = {}

    def decoded_length(k: int) -> int:
        if k not in lengths:
            lengths[k] = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        return lengths[k]

    def completing_token(char_end: int, lo: int) -> int:
        # Smallest k in [lo, n_tokens] whose prefix decode reaches char_end; token k - 1 completes it.
        hi = n_tokens
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_length(mid) >= char_end:
                hi = mid
            else:
                lo = mid + 1
        return lo - 1

    text = tokenizer.decode(ids, skip_special_tokens=True)
    ends: list[int] = []
    step_start = 0  # character where the current step's text begins
    search = text.find(delimiter)
    while search != -1:
        char_end = search + len(delimiter)
        end = completing_token(char_end, lo=(ends[-1] + 1) if ends else 1)
        if text[step_start:search].strip():
            if not ends or end > ends[-1]:
                ends.append(end)
            step_start = char_end
        elif ends:  # an empty step joins the step before it
            ends[-1] = max(ends[-1], end)
            step_start = char_end
        search = text.find(delimiter, char_end)
    if text[step_start:].strip() and (not ends or ends[-1] < n_tokens - 1):
        ends.append(n_tokens - 1)
    elif ends:  # whitespace after the last delimiter belongs to the last step
        ends[-1] = n_tokens - 1
    return ends
