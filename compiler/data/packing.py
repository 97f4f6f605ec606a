"""Predict how many rows trl 1.16 `pack_dataset` produces, without importing trl (stdlib only).

trl packs inside `Dataset.map(batched=True)`, whose default batch size is 1000: every block of 1000
consecutive examples is packed on its own (with `dataset_num_proc` > 1 each shard is also split).
"bfd": empty sequences are dropped, longer ones truncated to `max_length` (the overflow is lost),
then best-fit decreasing: longest first, each into the open bin with the least room that still fits.
"bfd_split": longer sequences are cut into max_length chunks (last one shorter) instead.
"wrapped": the block's tokens are concatenated and cut every max_length tokens.
"""

import bisect

MAP_BATCH_SIZE = 1000  # datasets.Dataset.map default, used by trl.pack_dataset


def _bfd_bins(lengths, max_length):
    spaces = []  # sorted free space of bins that still have room
    bins = 0
    for length in sorted(lengths, reverse=True):
        i = bisect.bisect_left(spaces, length)  # smallest free space >= length
        if i < len(spaces):
            space = spaces.pop(i) - length
        else:
            bins += 1
            space = max_length - length
        if space > 0:
            bisect.insort(spaces, space)
    return bins


def predict_packed_count(lengths, max_length, strategy="bfd", map_batch_size=MAP_BATCH_SIZE):
    total = 0
    for b in range(0, len(lengths), map_batch_size):
        block = [n for n in lengths[b : b + map_batch_size] if n > 0]
        if strategy == "bfd":
            total += _bfd_bins([min(n, max_length) for n in block], max_length)
        elif strategy == "bfd_split":
            pieces = []
            for n in block:
                pieces += [max_length] * (n // max_length) + ([n % max_length] if n % max_length else [])
            total += _bfd_bins(pieces, max_length)
        elif strategy == "wrapped":
            total += -(-sum(block) // max_length)
        else:
            raise ValueError(f"unknown packing strategy {strategy!r}")
    return total


def predict_packed_tokens(lengths, max_length, strategy="bfd"):
    """Tokens that survive packing (bfd truncates each sequence to max_length)."""
    if strategy == "bfd":
        return sum(min(n, max_length) for n in lengths)
    return sum(lengths)
