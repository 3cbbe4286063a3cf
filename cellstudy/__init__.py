"""cellstudy: self-supervised vision transformers vs CellProfiler features on CPJUMP1."""

__version__ = "0.1.0"
