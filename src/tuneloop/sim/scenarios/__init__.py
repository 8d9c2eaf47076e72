"""The shipped scenarios, by name."""

from tuneloop.sim.scenarios.code_assistant import code_assistant
from tuneloop.sim.scenarios.policy_tone import policy_tone
from tuneloop.sim.scenarios.rag import rag
from tuneloop.sim.scenarios.support import support
from tuneloop.sim.scenarios.two_tenants import two_tenants

# `two-tenants` builds one Scenario per tenant name; every other builds one Scenario.
SCENARIOS = {
    "support": support,
    "code-assistant": code_assistant,
    "policy-tone": policy_tone,
    "rag": rag,
    "two-tenants": two_tenants,
}

__all__ = ["SCENARIOS", "code_assistant", "policy_tone", "rag", "support", "two_tenants"]
