"""The gate: offline evaluation of a candidate policy version against production (see gate.run_gate)."""
