"""Where the benchmarks read and write: the repository, the published runs' data and the results folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PUBLISHED_CSV = REPO / "benchmarks" / "data" / "timm_benchmark_train_amp_nchw_pt112_cu113_rtx3090.csv"
