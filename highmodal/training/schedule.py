"""HighMMT's staggered multitask schedule (Appendix B.5)."""

from __future__ import annotations


def staggered_schedule(num_batches: dict[str, int]) -> list[list[str]]:
    """Tasks per step for one epoch: a task with ``n`` batches joins at step ``max_n - n``.

    With A: 300, B: 200, C: 100 batches, steps 0-99 train A, 100-199 A+B, 200-299 A+B+C. The
    paper found this beats uniform mixing because small tasks overfit less when they are seen
    only late in each epoch.
    """
    total = max(num_batches.values())
    return [[t for t, n in num_batches.items() if step >= total - n] for step in range(total)]
