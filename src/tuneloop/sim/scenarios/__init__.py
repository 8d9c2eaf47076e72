"""The shipped scenarios, by name."""

from tuneloop.sim.scenarios.support import support
from tuneloop.sim.scenarios.two_tenants import two_tenants

# `support` builds one Scenario; `two-tenants` builds one per tenant name.
SCENARIOS = {"support": support, "two-tenants": two_tenants}

__all__ = ["SCENARIOS", "support", "two_tenants"]
