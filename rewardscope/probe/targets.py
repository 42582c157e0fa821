"""What a value probe regresses on: trajectories of states, the split by problem, and TD(lambda) targets.

A trajectory is one rollout's states in time order: s_0 (the last prompt token) then every generated token
(level "token") or every step end (level "step"). Its only reward is terminal. The target of state s_t is the
lambda-return

    G_T = reward                                                   (the last state)
    G_t = gamma * ((1 - lambda) * V(s_{t+1}) + lambda * G_{t+1})   (t < T)

computed from the probe's own current predictions, detached (semi-gradient). lambda = 0 is the paper's TD(0),
G_t = gamma * V(s_{t+1}); lambda = 1 is Monte-Carlo, G_t = gamma^(T-t) * reward (the reward itself when
gamma = 1; within 1% of it for T < 1000 at the paper's gamma = 1 - 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from rewardscope.capture.reader import POSITION_KINDS  # the capture format's reader: its one home
from rewardscope.errors import RewardscopeError

INDEX_COLUMNS = ("row", "rollout_id", "problem_id", "position_kind", "token_index", "is_last", "reward")


@dataclass(frozen=True)
class Trajectories:
    """Trajectories concatenated: trajectory i is rows[offsets[i]:offsets[i + 1]], states in time order."""

    rows: np.ndarray  # int64 [n_states]: row of each state in the states tensor
    offsets: np.ndarray  # int64 [n + 1]
    rewards: np.ndarray  # float32 [n]: terminal reward (1 correct, 0 wrong)
    problem_ids: np.ndarray  # str [n]
    rollout_ids: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, keep: np.ndarray) -> Trajectories:
        """The trajectories where the boolean mask `keep` is true, in their order."""
        keep = np.asarray(keep, dtype=bool)
        lengths = self.lengths[keep]
        return Trajectories(
            rows=self.rows[np.repeat(keep, self.lengths)],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            rewards=self.rewards[keep],
            problem_ids=self.problem_ids[keep],
            rollout_ids=self.rollout_ids[keep],
        )


def read_index(index: pa.Table, where: str) -> dict[str, np.ndarray]:
    """The capture index's columns as numpy arrays, checked; errors name `where` (the index file)."""
    missing = [c for c in INDEX_COLUMNS if c not in index.column_names]
    if missing:
        raise RewardscopeError(f"{where}: no column {missing[0]!r} (has: {index.column_names})")
    cols = {c: index.column(c).to_numpy(zero_copy_only=False) for c in INDEX_COLUMNS}
    unknown = sorted(set(np.unique(cols["position_kind"])) - set(POSITION_KINDS))
    if unknown:
        raise RewardscopeError(f"{where}: position_kind {unknown[0]!r} is not one of {list(POSITION_KINDS)}")
    bad = np.flatnonzero((cols["reward"] != 0) & (cols["reward"] != 1))
    if len(bad):
        i = bad[0]
        raise RewardscopeError(f"{where}: row {cols['row'][i]}: reward {cols['reward'][i]} is not 0 or 1")
    return cols


def trajectories_from_index(cols: dict[str, np.ndarray], level: str, where: str) -> Trajectories:
    """Every rollout's trajectory at `level` from read_index's columns: s_0 then its tokens ("token": every
    captured position, step ends included) or its step ends ("step")."""
    kind = cols["position_kind"]
    states = np.flatnonzero(kind != "token") if level == "step" else np.arange(len(kind))
    rollout, token = cols["rollout_id"][states], cols["token_index"][states]
    order = np.lexsort((token, rollout))  # by rollout, then time; s0 has token_index -1 and comes first
    states, rollout = states[order], rollout[order]
    starts = np.flatnonzero(np.r_[True, rollout[1:] != rollout[:-1]])
    with_s0, n_s0 = np.unique(cols["rollout_id"][kind == "s0"], return_counts=True)
    bad = np.setdiff1d(rollout[starts], with_s0[n_s0 == 1])
    if len(bad):
        n = dict(zip(with_s0.tolist(), n_s0.tolist())).get(int(bad[0]), 0)
        raise RewardscopeError(f"{where}: rollout {bad[0]} has {n} s0 states (expected exactly one)")
    head = states[starts]  # each trajectory's s0 entry, which carries the rollout's reward and problem
    return Trajectories(
        rows=cols["row"][states].astype(np.int64),
        offsets=np.r_[starts, len(states)].astype(np.int64),
        rewards=cols["reward"][head].astype(np.float32),
        problem_ids=cols["problem_id"][head].astype(str),
        rollout_ids=rollout[starts].astype(np.int64),
    )


def split_problems(problem_ids: np.ndarray, test_fraction: float, seed, key: str = "probe.test_fraction",
                   ) -> np.ndarray:
    """Boolean mask of the held-out items: a seeded `test_fraction` of the distinct problems, all their rollouts.

    `seed` is anything numpy's default_rng takes (an int, or a sequence such as [split_seed, part])."""
    if not 0 < test_fraction < 1:
        raise RewardscopeError(f"{key}: {test_fraction} is not between 0 and 1")
    problems = np.unique(problem_ids)
    if len(problems) < 2:
        raise RewardscopeError(f"{key}: need at least 2 problems to hold some out, got {len(problems)}")
    n_test = min(len(problems) - 1, max(1, round(test_fraction * len(problems))))
    held_out = np.random.default_rng(seed).permutation(problems)[:n_test]
    return np.isin(problem_ids, held_out)


def lambda_returns(
    values: torch.Tensor, lengths: torch.Tensor, rewards: torch.Tensor, gamma: float, td_lambda: float
) -> torch.Tensor:
    """Targets [P, n] for predictions `values` [P, n] of a batch of trajectories laid end to end.

    lengths [B] (states per trajectory, summing to n), rewards [B]. `values` must already be detached.
    """
    n = values.shape[-1]  # known on the host: no GPU sync to size the outputs below
    traj = torch.repeat_interleave(torch.arange(len(lengths), device=values.device), lengths, output_size=n)
    ends = torch.cumsum(lengths, 0)
    time = torch.arange(n, device=values.device) - (ends - lengths)[traj]
    last = time == lengths[traj] - 1
    reward = rewards[traj].to(values.dtype)
    if td_lambda == 1:
        return (reward * gamma ** (lengths[traj] - 1 - time).to(values.dtype)).expand_as(values)
    # The one-step part u_t: gamma (1 - lambda) V(s_{t+1}) inside a trajectory, the reward at its last state.
    next_value = torch.roll(values, -1, dims=-1)  # wrong only at last states, which take the reward instead
    one_step = torch.where(last, reward, gamma * (1 - td_lambda) * next_value)
    if td_lambda == 0:
        return one_step
    # G_t = sum_{j >= t} (gamma lambda)^(j - t) u_j within each trajectory: a [T, T] discount matrix applied to
    # the batch padded to [P, B, T] (padding u = 0), one matmul instead of a loop over time.
    T = int(lengths.max())
    padded = values.new_zeros(values.shape[0], len(lengths), T)
    padded[:, traj, time] = one_step
    k = torch.arange(T, device=values.device)
    lag = k[None, :] - k[:, None]  # lag[t, j] = j - t
    discount = torch.where(lag >= 0, (gamma * td_lambda) ** lag.clamp(min=0).to(values.dtype), 0.0)
    return (padded @ discount.T)[:, traj, time]
