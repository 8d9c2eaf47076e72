"""The gate: offline evaluation of a candidate adapter version against production (see gate.run_gate)."""
