"""Simulated users: they talk to tuneloop only through its public HTTP API, as real clients do.

Nothing here imports from `tuneloop` outside `tuneloop.sim` (a test checks it), so the simulator measures
the product from the outside with a hidden preference tuneloop never sees.
"""

from tuneloop.sim.runner import SimError, TrafficReport, answers, run_traffic, satisfaction
from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic
from tuneloop.sim.scenarios import SCENARIOS, code_assistant, policy_tone, support, two_tenants

__all__ = [
    "SCENARIOS",
    "Behaviour",
    "Prompt",
    "Scenario",
    "SimError",
    "Topic",
    "TrafficReport",
    "answers",
    "code_assistant",
    "policy_tone",
    "run_traffic",
    "satisfaction",
    "support",
    "two_tenants",
]
