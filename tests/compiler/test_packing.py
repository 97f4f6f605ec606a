"""The compiler predicts trl's packing without importing trl; here the prediction meets trl itself."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset, disable_progress_bars
from trl.data_utils import pack_dataset

from ftc.compiler.data.packing import predict_packed_count

disable_progress_bars()


@pytest.mark.parametrize("strategy", ["bfd", "bfd_split", "wrapped"])
def test_prediction_equals_trl(strategy):
    rng = random.Random(0)
    for trial in range(12):
        max_length = rng.choice([8, 64, 100, 512])
        n = rng.choice([1, 7, 50, 999, 1001, 2100])  # trl packs each block of 1000 rows on its own
        high = rng.choice([max_length // 2, max_length, 3 * max_length])
        lengths = [rng.randint(1, max(1, high)) for _ in range(n)]
        ids = [[1] * k for k in lengths]
        packed = pack_dataset(Dataset.from_dict({"input_ids": ids, "labels": ids}), max_length, strategy)
        assert predict_packed_count(lengths, max_length, strategy) == len(packed), (trial, max_length, n)
