"""Hidden-state capture: one teacher-forced forward over prompt + response per rollout, streamed to disk.

States kept (CaptureConfig.positions):
- "all":   s_0 (the last prompt token, before anything is generated) and every generated token;
- "steps": s_0, the step ends and the last token (the probe's "last token" state), to save disk.
s_0 is one state per distinct prompt: all rollouts of a problem share their prompt, so they get the same s_0
bits: those of the prompt's first rollout in processing order, copied to the others (a resumed capture reads
them back from the shard that holds them). Taken from each rollout's own forward, s_0 would move at rounding
level with the batch the response ran in (longest first: with its length), and an AUROC over s_0 would break
its within-problem ties by that noise. Copying costs no extra forward.
The EOS token's state is never kept: generation stops when EOS is *sampled*, so the model never reads it (no
sampled trajectory has a state there), and step_ends never point at it. The last kept token (`is_last`) is the
last one before EOS, the same token the last step ends at.

Order: rollouts run longest first (less padding per batch; out-of-memory shows at once, not at the end). A
rollout's rows are contiguous and in position order, and index.parquet lists rollouts in that processing
order, not by rollout_id: select rows by the index columns, never by assuming an order.

Memory: one buffer of `shard_rows` states per layer, written out when full, the index (~50 bytes a row) and
one s_0 per distinct prompt and layer: it does not grow with the number of rollouts.

Disk: `check_disk` estimates the whole capture (states, safetensors headers, the index twice, a margin) and
refuses a disk too small before the model is loaded; a disk that fills up anyway stops the capture with a
RewardscopeError saying what is kept (every complete shard) and that a re-run resumes.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from rewardscope import __version__
from rewardscope.capture.reader import POSITION_KINDS, completed_shards, load_rows, part_path, shard_path
from rewardscope.errors import RewardscopeError
from rewardscope.hooks import num_layers, residual_hooks, resolve_layers
from rewardscope.io import is_temporary, read_json, write_json, write_parquet, write_safetensors
from rewardscope.models import pad_batch

STORAGE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CAPTURE_MODES = ("all", "steps")  # capture.positions: which states are kept (module docstring)
REQUIRED_COLUMNS = ("rollout_id", "problem_id", "prompt_ids", "response_ids", "step_ends", "finish_reason", "reward")
# A capture directory is resumed or reused only if these match the run's own.
SETTINGS = ("model", "revision", "model_fingerprint", "layers", "dtype", "positions", "shard_rows", "rollouts_sha256",
            "s0")
S0 = "first rollout of the prompt"  # metadata "s0"; older captures took each rollout's own (no "s0" entry)


@dataclass
class CapturePlan:
    """What each forward runs and where each state goes, from the rollouts table alone (no model needed)."""

    sequences: list[np.ndarray]  # per rollout, in processing order: prompt + response ids, EOS dropped
    selected: list[np.ndarray]  # per rollout: positions in its sequence whose states are kept, in row order
    prompt_of: np.ndarray  # per rollout, in processing order: index of its prompt among the distinct prompts
    s0_source: np.ndarray  # per distinct prompt: its first rollout in processing order, whose s_0 all share
    first_rows: np.ndarray  # [n_rollouts + 1]: global row of each rollout's first state (its s_0); last = total
    index: pa.Table  # one row per state, in storage order: index.parquet
    fingerprint: str  # hash of every rollout's ids, step ends and finish reason

    @property
    def tokens(self) -> int:
        """Prompt + response tokens of every rollout: the capture's work, counted once however often resumed."""
        return sum(len(s) for s in self.sequences)


def plan_capture(rollouts: pa.Table, positions: str = "all") -> CapturePlan:
    if positions not in CAPTURE_MODES:
        raise RewardscopeError(f"capture.positions: {positions!r} is not one of {list(CAPTURE_MODES)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in rollouts.column_names]
    if missing:
        raise RewardscopeError(f"rollouts: missing column {missing[0]!r} (has: {rollouts.column_names})")
    if rollouts.num_rows == 0:
        raise RewardscopeError("rollouts: no rows to capture")
    prompt, prompt_at = _lists(rollouts, "prompt_ids")
    response, response_at = _lists(rollouts, "response_ids")
    steps, steps_at = _lists(rollouts, "step_ends")
    rollout_ids = rollouts.column("rollout_id").to_numpy().astype(np.int64)
    eos = rollouts.column("finish_reason").to_numpy(zero_copy_only=False) == "eos"
    n_prompt = np.diff(prompt_at)
    n_kept = np.diff(response_at) - eos
    bad = np.flatnonzero((n_prompt == 0) | (n_kept < 0))
    if bad.size:
        raise RewardscopeError(
            f"rollouts: rollout_id {rollout_ids[bad[0]]}: empty prompt_ids, or finish_reason eos without response_ids"
        )

    order = np.argsort(-(n_prompt + n_kept), kind="stable")
    sequences, selected, columns = [], [], []
    for i in order:
        ends = steps[steps_at[i] : steps_at[i + 1]]
        rows = state_rows(int(n_kept[i]), ends, positions, int(rollout_ids[i]))
        kept = response[response_at[i] : response_at[i] + n_kept[i]]
        sequences.append(np.concatenate([prompt[prompt_at[i] : prompt_at[i + 1]], kept]))
        selected.append(n_prompt[i] + rows[0])  # token -1 (s_0) -> the last prompt position
        columns.append(rows)
    tokens, kinds, step_index, is_last = (np.concatenate(c) for c in zip(*columns))

    counts = np.array([len(rows[0]) for rows in columns])
    owner = pa.array(np.repeat(order, counts))  # table row of each state's rollout
    n_rows = int(counts.sum())
    index = pa.table({
        "row": pa.array(np.arange(n_rows, dtype=np.int64)),
        "rollout_id": rollouts.column("rollout_id").take(owner).cast(pa.int64()),
        "problem_id": rollouts.column("problem_id").take(owner).cast(pa.string()),
        "position_kind": pa.DictionaryArray.from_arrays(kinds, POSITION_KINDS).cast(pa.string()),
        "step_index": pa.array(step_index.astype(np.int32)),
        "token_index": pa.array(tokens.astype(np.int32)),
        "is_last": pa.array(is_last),
        "reward": rollouts.column("reward").take(owner).cast(pa.float32()),
    })
    digest = hashlib.sha256()
    for part in (rollout_ids, prompt, prompt_at, response, response_at, steps, steps_at, eos):
        digest.update(np.ascontiguousarray(part).tobytes())
    first_rows = np.concatenate([[0], np.cumsum(counts)])
    keys = [prompt[prompt_at[i] : prompt_at[i + 1]].tobytes() for i in order]
    where = {key: j for j, key in enumerate(dict.fromkeys(keys))}  # numbered in order of first appearance
    prompt_of = np.array([where[key] for key in keys], dtype=np.int64)
    s0_source = np.unique(prompt_of, return_index=True)[1]
    return CapturePlan(sequences, selected, prompt_of, s0_source, first_rows, index, digest.hexdigest()[:16])


def state_rows(n_tokens: int, step_ends: np.ndarray, positions: str, rollout_id: int):
    """Index columns of one rollout's states: (token_index, kind code, step_index, is_last).

    `n_tokens` counts the response tokens before EOS; token_index -1 is s_0. A token's step is the number of
    step ends before it (a step end belongs to the step it ends).
    """
    ends = np.asarray(step_ends, dtype=np.int64)
    if ends.size and (ends[0] < 0 or ends[-1] >= n_tokens or np.any(np.diff(ends) <= 0)):
        raise RewardscopeError(
            f"rollouts: rollout_id {rollout_id}: step_ends {ends.tolist()} must increase strictly within "
            f"0..{n_tokens - 1} (the response tokens before EOS)"
        )
    if positions == "all":
        tokens = np.arange(-1, n_tokens)
    else:
        missing_last = n_tokens > 0 and (ends.size == 0 or ends[-1] != n_tokens - 1)
        tokens = np.concatenate([[-1], ends, [n_tokens - 1] if missing_last else []]).astype(np.int64)
    kind = np.where(np.isin(tokens, ends), POSITION_KINDS.index("step_end"), POSITION_KINDS.index("token"))
    kind = kind.astype(np.int8)
    step = np.searchsorted(ends, tokens, side="left")
    kind[0], step[0] = POSITION_KINDS.index("s0"), -1
    is_last = np.zeros(len(tokens), dtype=bool)
    is_last[-1] = True
    return tokens, kind, step, is_last


def iter_states(
    model, plan: CapturePlan, layers: list[int], dtype: torch.dtype = torch.float16, batch_size: int = 8,
    pad_id: int = 0, padding_side: str = "right", start: int = 0, stored=None,
) -> Iterator[tuple[int, list[torch.Tensor], int]]:
    """Per batch of rollouts (processing order, from rollout `start`): (first row, [rows, d] CPU states of each
    layer, tokens forwarded).

    Each rollout's first row is its prompt's s_0, the one of the prompt's first rollout (plan.s0_source), so the
    rollouts of a problem share its bits. `stored(rows) -> [[len(rows), d] per layer]` reads rows already on disk:
    a resume (start > 0) takes from there the s_0 of prompts whose first rollout came before `start`."""
    device = model.get_input_embeddings().weight.device
    s0: list[torch.Tensor] | None = None  # per layer, [n_prompts, d]: each prompt's s_0 once seen
    for b0 in range(start, len(plan.sequences), batch_size):
        sequences = plan.sequences[b0 : b0 + batch_size]
        inputs, starts = pad_batch(sequences, pad_id, padding_side, device)
        width = inputs["input_ids"].shape[1]
        selected = plan.selected[b0 : b0 + batch_size]
        flat = np.concatenate([b * width + start + sel for b, (start, sel) in enumerate(zip(starts, selected))])
        states = _forward(model, inputs, torch.from_numpy(flat).to(device), layers, dtype)
        with torch.inference_mode():  # the states are inference tensors: edited in place only in this mode
            if s0 is None:
                s0 = [torch.empty(len(plan.s0_source), state.shape[1], dtype=dtype) for state in states]
                # Prompts of the rollouts still to do whose first rollout is in the shards already written.
                earlier = np.intersect1d(np.flatnonzero(plan.s0_source < b0), plan.prompt_of[b0:])
                if earlier.size:
                    for layer_s0, old in zip(s0, stored(plan.first_rows[plan.s0_source[earlier]])):
                        layer_s0[earlier] = old
            prompt = plan.prompt_of[b0 : b0 + batch_size]
            first = plan.s0_source[prompt] == np.arange(b0, b0 + len(sequences))  # the prompt's first rollout
            counts = np.array([len(sel) for sel in selected])
            at = np.cumsum(counts) - counts  # each rollout's s_0 row in the batch
            for layer_s0, layer_states in zip(s0, states):
                layer_s0[prompt[first]] = layer_states[at[first]]
                layer_states[at[~first]] = layer_s0[prompt[~first]]
        yield int(plan.first_rows[b0]), states, sum(len(s) for s in sequences)


def _forward(model, inputs: dict, flat: torch.Tensor, layers: list[int], dtype: torch.dtype) -> list[torch.Tensor]:
    kept: dict[int, torch.Tensor] = {}
    peaks: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(hidden: torch.Tensor, hook) -> None:
            # Gather the wanted positions at once: the full [batch, seq, d] output is never held.
            rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat.to(hidden.device))
            kept[layer], peaks[layer] = rows.to(dtype), rows.abs().amax().float()  # no sync mid-forward

        return fn

    with torch.inference_mode(), residual_hooks(model, {l: keep(l) for l in layers}, stop_after=layers[-1]):
        model(**inputs, use_cache=False)
    limit = torch.finfo(dtype).max
    for layer, peak in zip(layers, torch.stack([peaks[l].to(flat.device) for l in layers]).tolist()):
        if not peak <= limit:  # also catches NaN
            raise RewardscopeError(
                f"layer {layer}: states reach {peak:.4g}, beyond {str(dtype).removeprefix('torch.')}'s "
                f"largest value {limit:.4g}: set capture.dtype=bfloat16 or float32 (or the model produced inf/NaN)"
            )
    return [kept[layer].cpu() for layer in layers]


class _ShardWriter:
    """One buffer of `shard_rows` states per layer. A full buffer is written as shard K of every layer, then
    index/part-K.parquet, which marks shard K complete (an interrupted shard is simply written again)."""

    def __init__(self, out_dir: Path, layers: list[int], buffer: torch.Tensor, index: pa.Table, row: int,
                 on_shard=None):
        self.out_dir, self.layers, self.buffer, self.index = out_dir, layers, buffer, index
        self.shard_rows = buffer.shape[1]
        self.row = row  # next global row to store
        self.on_shard = on_shard  # called after each complete shard

    def write(self, first_row: int, states: list[torch.Tensor]) -> None:
        at = self.row - first_row  # rows before self.row are on disk already (resumed run)
        while at < len(states[0]):
            shard, offset = divmod(self.row, self.shard_rows)
            take = min(self.shard_rows - offset, len(states[0]) - at)
            for buf, layer_states in zip(self.buffer, states):
                buf[offset : offset + take] = layer_states[at : at + take]
            self.row, at = self.row + take, at + take
            if offset + take == self.shard_rows or self.row == self.index.num_rows:
                self._flush(shard, offset + take)

    def _flush(self, shard: int, n: int) -> None:
        for layer, buf in zip(self.layers, self.buffer):
            write_safetensors(shard_path(self.out_dir, layer, shard), {"states": buf[:n]})  # full disk: ENOSPC
        write_parquet(part_path(self.out_dir, shard), self.index.slice(shard * self.shard_rows, n))
        if self.on_shard is not None:
            self.on_shard(shard)


def capture(
    model, tokenizer, rollouts: pa.Table, out_dir: str | Path, layers: list[int] | str = "all",
    positions: str = "all", dtype: str = "float16", batch_size: int = 8, shard_rows: int = 8192, *,
    padding_side: str = "right", model_name: str | None = None, revision: str | None = None,
    model_fingerprint: str | None = None, plan: CapturePlan | None = None,
) -> Path:
    """Capture the residual-stream states of `rollouts` (rollouts.parquet's columns) into `out_dir`.

    Resumes an interrupted capture of the same settings; returns at once if it is complete. Right padding is the
    default because pad tokens after a sequence cannot reach it through causal attention even if a model mishandled
    the mask; left padding gives the same states (tested). `model_name`/`revision`/`model_fingerprint` are
    recorded in metadata.json (default name: the model's name_or_path). `plan`: plan_capture(rollouts, positions)
    from a caller that has already run check_disk with it (the stage, before loading the model).
    """
    out_dir = Path(out_dir)
    if dtype not in STORAGE_DTYPES:
        raise RewardscopeError(f"capture.dtype: {dtype!r} is not one of {list(STORAGE_DTYPES)}")
    if batch_size < 1 or shard_rows < 1:
        raise RewardscopeError(f"capture: batch_size ({batch_size}) and shard_rows ({shard_rows}) must be >= 1")
    if padding_side not in ("left", "right"):
        raise RewardscopeError(f"padding_side: {padding_side!r} is not 'left' or 'right'")
    if model.training:
        raise RewardscopeError("the model is in training mode (dropout would perturb the states): call model.eval()")
    n_layers = num_layers(model)
    layers = resolve_layers(layers, n_layers)
    checked = plan is not None
    plan = plan if checked else plan_capture(rollouts, positions)
    hidden_size = model.config.get_text_config().hidden_size
    n_rows = plan.index.num_rows
    n_shards = -(-n_rows // shard_rows)
    meta = dict(
        model=model_name or model.name_or_path, revision=revision, model_fingerprint=model_fingerprint,
        num_layers=n_layers, hidden_size=hidden_size, layers=layers, dtype=dtype, positions=positions,
        shard_rows=shard_rows, rollouts_sha256=plan.fingerprint, n_rollouts=rollouts.num_rows, n_rows=n_rows,
        shards=n_shards, s0=S0, compute_dtype=str(model.dtype).removeprefix("torch."), code_version=__version__,
        complete=False,
    )
    meta_path = out_dir / "metadata.json"
    earlier = 0.0  # seconds spent by earlier, interrupted runs of this capture
    if meta_path.exists():
        existing = read_json(meta_path)
        check_compatible(existing, meta, out_dir)
        if existing.get("complete"):
            return out_dir
        earlier = float(existing.get("stats", {}).get("elapsed_s", 0.0))
    done = completed_shards(out_dir, n_shards)
    need = disk_need(plan, len(layers), hidden_size, dtype, shard_rows)
    if not checked:
        check_disk(out_dir, plan, len(layers), hidden_size, dtype, shard_rows)
    started = time.perf_counter()

    def stats() -> dict:
        # Cumulative over every run of this capture, so a resumed capture's figures cover all of it.
        elapsed = earlier + time.perf_counter() - started
        return dict(elapsed_s=round(elapsed, 3), tokens=plan.tokens,
                    tokens_per_s=round(plan.tokens / max(elapsed, 1e-9), 1), resumed_from_shard=done)

    def save_progress(shard: int) -> None:
        write_json(meta_path, {**meta, "stats": stats()})

    try:
        save_progress(-1)
        # Restart from the batch holding the first missing row, with the same batches as an uninterrupted run,
        # so resumed states are bit-identical to it.
        first = int(np.searchsorted(plan.first_rows, done * shard_rows, side="right")) - 1
        first = first // batch_size * batch_size
        buffer = torch.empty(len(layers), min(shard_rows, n_rows), hidden_size, dtype=STORAGE_DTYPES[dtype])
        writer = _ShardWriter(out_dir, layers, buffer, plan.index, done * shard_rows, on_shard=save_progress)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if done < n_shards:
            total = sum(len(s) for s in plan.sequences[first:])
            with tqdm(total=total, unit="tok", unit_scale=True, desc="capture", disable=None) as bar:
                def stored(rows: np.ndarray) -> list[torch.Tensor]:
                    return [load_rows(out_dir, layer, rows, shard_rows, hidden_size) for layer in layers]

                batches = iter_states(model, plan, layers, STORAGE_DTYPES[dtype], batch_size, pad_id, padding_side,
                                      first, stored)
                for row, states, n_tokens in batches:
                    writer.write(row, states)
                    bar.update(n_tokens)
        write_parquet(out_dir / "index.parquet", plan.index)
        written = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file() and not is_temporary(p))
        write_json(meta_path, {**meta, "complete": True, "bytes": written, "stats": stats()})
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        kept = completed_shards(out_dir, n_shards)
        raise RewardscopeError(
            f"{out_dir}: the disk filled up: this capture needs about {_human(need)} in all; {kept} of {n_shards} "
            f"shards are complete and kept (the partial file was removed). Free some space (or capture fewer "
            f"layers, capture.positions=steps, a smaller capture.dtype) and run `capture` again: it resumes from "
            f"shard {kept}") from None
    return out_dir


def check_compatible(existing: dict, expected: dict, where: Path) -> None:
    """Refuse to resume or reuse a capture made with other settings (another model, other rollouts...)."""
    for key in SETTINGS:
        if key == "model_fingerprint" and None in (existing.get(key), expected.get(key)):
            continue  # unknown on one side (a hub model not cached yet, a capture from an older version)
        if key in expected and existing.get(key) != expected[key]:
            raise RewardscopeError(
                f"{where}: captured with {key}={existing.get(key)!r}, but this run has {key}={expected[key]!r}; "
                f"use another directory or delete this one to capture again"
            )


_HEADER_BYTES = 256  # a safetensors file's 8-byte length and JSON header ({"states": {dtype, shape, offsets}})
_FILE_BYTES = 8192  # per file: a parquet footer, and the filesystem block a small file rounds up to


def disk_need(plan: CapturePlan, n_layers: int, hidden: int, dtype: str, shard_rows: int) -> int:
    """Bytes a whole capture takes on disk: the states, each shard file's header, the index twice (its parts
    and index.parquet, bounded by its Arrow size) and a file's worth per file, plus a margin of 2% and 1 MiB."""
    n_rows = plan.index.num_rows
    n_shards = -(-n_rows // shard_rows)
    states = n_rows * n_layers * hidden * STORAGE_DTYPES[dtype].itemsize
    files = n_shards * (n_layers + 1) + 2  # shards of every layer, index parts, index.parquet, metadata.json
    total = states + n_shards * n_layers * _HEADER_BYTES + 2 * plan.index.nbytes + files * _FILE_BYTES
    return total + total // 50 + (1 << 20)


def check_disk(out_dir: Path, plan: CapturePlan, n_layers: int, hidden: int, dtype: str, shard_rows: int) -> None:
    """Print what the capture needs on disk and refuse to start when the rest of it does not fit."""
    n_rows, itemsize = plan.index.num_rows, STORAGE_DTYPES[dtype].itemsize
    n_shards = -(-n_rows // shard_rows)
    done = completed_shards(out_dir, n_shards)
    need = disk_need(plan, n_layers, hidden, dtype, shard_rows)
    print(f"capture: {n_rows:,} states x {n_layers} layers x {hidden} dims x {itemsize} bytes = "
          f"{_human(n_rows * n_layers * hidden * itemsize)} of states, {_human(need)} on disk with the index and "
          f"a margin, in {n_shards} shard(s) per layer ({done} done) -> {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    remaining, free = need * (n_shards - done) // n_shards, shutil.disk_usage(out_dir).free
    if remaining > free:
        raise RewardscopeError(
            f"{out_dir}: the capture needs {_human(remaining)} more but only {_human(free)} is free "
            f"(fewer layers, capture.positions=steps or a smaller capture.dtype need less)"
        )


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024


def _lists(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> column as (all values as int32, offsets): no Python object per token."""
    column = table.column(name)
    if column.null_count:
        raise RewardscopeError(f"rollouts: column {name!r} has null rows")
    array = column.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        raise RewardscopeError(f"rollouts: column {name!r} must be a list of token indices, not {array.type}")
    offsets = array.offsets.to_numpy().astype(np.int64)
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.int32), offsets - offsets[0]
