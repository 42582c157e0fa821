"""TD(lambda) targets checked by hand, trajectories from a real capture index, the split by problem."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from rewardscope.capture.extract import plan_capture
from rewardscope.errors import RewardscopeError
from rewardscope.probe.targets import lambda_returns, read_index, split_problems, trajectories_from_index

GAMMA = 0.9
# Two trajectories laid end to end: s0..s3 (reward 1) and s0..s1 (reward 0); two probes' predictions.
VALUES = torch.tensor([[0.2, 0.4, 0.6, 0.8, 0.5, 0.3], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]])
LENGTHS, REWARDS = torch.tensor([4, 2]), torch.tensor([1.0, 0.0])


@pytest.mark.parametrize(
    "td_lambda, first_probe",
    [
        (0.0, [0.9 * 0.4, 0.9 * 0.6, 0.9 * 0.8, 1.0, 0.9 * 0.3, 0.0]),  # G_t = gamma V(s_t+1); G_T = reward
        (1.0, [0.9**3, 0.9**2, 0.9, 1.0, 0.0, 0.0]),  # G_t = gamma^(T-t) reward
        # G_2 = .9(.5*.8 + .5*1) = .81; G_1 = .9(.5*.6 + .5*.81) = .6345; G_0 = .9(.5*.4 + .5*.6345)
        (0.5, [0.9 * (0.2 + 0.5 * 0.6345), 0.6345, 0.81, 1.0, 0.9 * 0.5 * 0.3, 0.0]),
    ],
)
def test_lambda_returns_by_hand(td_lambda, first_probe):
    targets = lambda_returns(VALUES, LENGTHS, REWARDS, GAMMA, td_lambda)
    assert targets.shape == VALUES.shape
    torch.testing.assert_close(targets[0], torch.tensor(first_probe), atol=1e-6, rtol=0)
    # The second probe has its own bootstrap values: TD(0) targets follow them, Monte-Carlo ones do not.
    second = {0.0: [0.09, 0.09, 0.09, 1.0, 0.09, 0.0], 1.0: first_probe}.get(td_lambda)
    if second is not None:
        torch.testing.assert_close(targets[1], torch.tensor(second), atol=1e-6, rtol=0)


def test_monte_carlo_without_discount_is_the_reward_everywhere():
    targets = lambda_returns(VALUES, LENGTHS, REWARDS, 1.0, 1.0)
    torch.testing.assert_close(targets[0], torch.tensor([1.0, 1, 1, 1, 0, 0]))


def test_general_lambda_path_meets_both_closed_forms():
    values = torch.rand(3, 40)
    lengths, rewards = torch.tensor([1, 17, 22]), torch.tensor([1.0, 0.0, 1.0])
    for edge, near in ((0.0, 1e-9), (1.0, 1 - 1e-9)):
        exact = lambda_returns(values, lengths, rewards, 0.99, edge)
        torch.testing.assert_close(lambda_returns(values, lengths, rewards, 0.99, near), exact, atol=1e-6, rtol=0)


def rollouts_table() -> pa.Table:
    """rollouts.parquet's columns for three rollouts of two problems (ids as a char tokenizer would give)."""
    rows = [
        dict(rollout_id=0, problem_id="a", prompt_ids=[5, 6, 7], response_ids=[10, 11, 1, 12, 13, 2],
             step_ends=[2, 4], finish_reason="eos", reward=1.0),
        dict(rollout_id=1, problem_id="a", prompt_ids=[5, 6, 7], response_ids=[10, 1, 11, 12, 1, 13, 14, 15],
             step_ends=[1, 4, 7], finish_reason="length", reward=0.0),
        dict(rollout_id=7, problem_id="b", prompt_ids=[8, 9], response_ids=[2], step_ends=[],
             finish_reason="eos", reward=0.0),  # EOS at once: s0 alone
    ]
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("positions", ["all", "steps"])
def test_trajectories_from_a_real_capture_index(positions):
    index = plan_capture(rollouts_table(), positions).index  # rows are in processing order, longest first
    cols = read_index(index, "index.parquet")
    token = {int(r): int(t) for r, t in zip(cols["row"], cols["token_index"])}
    rollout_of = {int(r): int(o) for r, o in zip(cols["row"], cols["rollout_id"])}
    for level in (["token", "step"] if positions == "all" else ["step"]):
        traj = trajectories_from_index(cols, level, "index.parquet")
        assert traj.rollout_ids.tolist() == [0, 1, 7]
        assert traj.rewards.tolist() == [1.0, 0.0, 0.0] and traj.problem_ids.tolist() == ["a", "a", "b"]
        times = [[token[int(r)] for r in traj.rows[traj.offsets[i] : traj.offsets[i + 1]]] for i in range(3)]
        if level == "token":
            assert times == [[-1, 0, 1, 2, 3, 4], [-1, 0, 1, 2, 3, 4, 5, 6, 7], [-1]]
        else:
            assert times == [[-1, 2, 4], [-1, 1, 4, 7], [-1]]
        assert all(rollout_of[int(r)] == traj.rollout_ids[i] for i in range(3)
                   for r in traj.rows[traj.offsets[i] : traj.offsets[i + 1]])
        sub = traj.subset(np.array([False, True, True]))
        assert sub.rollout_ids.tolist() == [1, 7] and sub.lengths.tolist() == traj.lengths[1:].tolist()
        assert sub.rows.tolist() == traj.rows[traj.offsets[1] :].tolist()


def test_bad_index_is_named():
    index = plan_capture(rollouts_table(), "all").index
    bad_reward = index.set_column(7, "reward", pa.array(np.full(index.num_rows, 0.5, dtype=np.float32)))
    with pytest.raises(RewardscopeError, match=r"idx.parquet: row 0: reward 0.5 is not 0 or 1"):
        read_index(bad_reward, "idx.parquet")
    with pytest.raises(RewardscopeError, match=r"idx.parquet: no column 'reward'"):
        read_index(index.drop(["reward"]), "idx.parquet")
    kinds = index.column("position_kind").to_pylist()
    no_s0 = index.set_column(3, "position_kind", pa.array(["token" if k == "s0" and i == 0 else k
                                                           for i, k in enumerate(kinds)]))
    with pytest.raises(RewardscopeError, match=r"idx.parquet: rollout 1 has 0 s0 states \(expected exactly one\)"):
        trajectories_from_index(read_index(no_s0, "idx.parquet"), "token", "idx.parquet")


def test_split_is_by_problem_seeded_and_sized():
    problems = np.repeat([f"p{i}" for i in range(50)], 4)
    held_out = split_problems(problems, 0.2, seed=3)
    assert not set(problems[held_out]) & set(problems[~held_out])  # no problem on both sides
    assert len(set(problems[held_out])) == 10 and held_out.sum() == 40
    assert (split_problems(problems, 0.2, seed=3) == held_out).all()
    assert (split_problems(problems, 0.2, seed=4) != held_out).any()
    assert split_problems(np.array(["a", "b"]), 0.01, 0).sum() == 1  # always one problem on each side
    with pytest.raises(RewardscopeError, match="need at least 2 problems"):
        split_problems(np.array(["a", "a"]), 0.2, 0)
    with pytest.raises(RewardscopeError, match="probe.test_fraction: 1.0 is not between 0 and 1"):
        split_problems(problems, 1.0, 0)
