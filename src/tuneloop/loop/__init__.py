"""The loop: per tenant, a turn runs snapshot → reward model → adapter → gate → canary → decision.

`policy` holds when a turn starts and how it learns, `turns` the stored record of each turn, `stages` what
each stage does, and `controller` the `Loop` that advances a tenant's open turn.
"""

from tuneloop.loop.controller import Loop
from tuneloop.loop.policy import LoopPolicy

__all__ = ["Loop", "LoopPolicy"]
