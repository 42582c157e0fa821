"""One exception type for every problem a user can fix (bad recipe, bad file, bad option).

The CLI prints these as a one-line message instead of a traceback; anything else is a bug.
"""


class RewardscopeError(Exception):
    """A problem with the user's input, named precisely enough to fix it."""
