"""SFT and DPO training on the exported sets with TRL (docs/training.md): typed recipes with the
zephyr-7b-beta presets, the tiny offline model for CI, and the trainer wiring the flows call."""
