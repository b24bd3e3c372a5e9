"""The restore core: inputs and outputs, tiling, self-ensemble views, precision, plan-then-run pipeline."""
