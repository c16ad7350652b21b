"""Reads HdrHistogram interval logs with the `hdrhistogram` package from
PyPI (an implementation nobody on the team wrote) and prints, as JSON, the
count and percentiles of all their intervals added together.

Percentiles are taken from the decoded buckets with the rank HdrHistogram's
Rust and Java implementations use (the ceiling of q x count); the package's
own get_value_at_percentile rounds the rank to nearest, which can land one
sample lower, in the bucket below.

usage: hlog_check.py LOG...
"""
import json
import math
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

total = HdrHistogram(1, 24 * 3600 * 10**9, 3)
intervals = 0
for path in sys.argv[1:]:
    reader = HistogramLogReader(path, HdrHistogram(1, 24 * 3600 * 10**9, 3))
    while (h := reader.get_next_interval_histogram()) is not None:
        total.add(h)
        intervals += 1
count = total.get_total_count()


def at(quantile):
    """The value below or at which `quantile` of the samples lie."""
    want = max(1, math.ceil(quantile * count))
    seen = 0
    for item in total.get_recorded_iterator():
        seen += item.count_at_value_iterated_to
        if seen >= want:
            return item.value_iterated_to
    return total.get_max_value()


print(json.dumps({
    "intervals": intervals,
    "count": count,
    "p50": at(0.5),
    "p90": at(0.9),
    "p99": at(0.99),
    "p999": at(0.999),
    "max": total.get_max_value(),
}))
