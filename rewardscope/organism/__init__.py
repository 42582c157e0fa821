"""The demo model organism: a small Llama trained on mod-10 arithmetic chains (docs/organism.md).

Its task is a dataset and a kind of answer like any other: `add_dataset` and `add_grader` register them with
rewardscope.data and rewardscope.grading, which name them in their entry-point tables ("organism" ->
"rewardscope.organism:add_dataset" / ":add_grader") and call them the first time "organism" is asked for.
Neither registry imports this package before that, and this package imports them only inside these functions.
"""

DATASET_SETTINGS = ("n_problems", "seed", "variant")  # the DataConfig keys the organism's dataset reads


def add_dataset() -> None:
    """Register the dataset "organism": `data.n_problems` generated problems (`data.seed`, `data.variant`)."""
    from rewardscope.data.loaders import register_dataset

    register_dataset("organism", _load, "organism", uses=DATASET_SETTINGS, replace=True)


def add_grader() -> None:
    """Register the grader kind "organism": the digit of the response's last answer line against the gold digit."""
    from rewardscope.grading.grader import register_grader
    from rewardscope.organism.task import extract_answer

    register_grader("organism", extract_answer, replace=True)


def _load(cfg) -> list:
    from rewardscope.organism.task import generate_problems

    return generate_problems(n=cfg.n_problems, seed=cfg.seed, variant=cfg.variant)
