"""What every job shares: atomic file writes, progress lines, provenance records, YAML config files,
torch.distributed helpers and the hook that registers our classes when transformers loads. Imports nothing of
this package."""
