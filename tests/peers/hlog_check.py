"""Reads HdrHistogram interval logs with the `hdrhistogram` package from
PyPI (an implementation nobody on the team wrote) and prints, as JSON, the
count and percentiles of all their intervals added together.

usage: hlog_check.py LOG...
"""
import json
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
print(json.dumps({
    "intervals": intervals,
    "count": total.get_total_count(),
    "p50": total.get_value_at_percentile(50),
    "p90": total.get_value_at_percentile(90),
    "p99": total.get_value_at_percentile(99),
    "max": total.get_max_value(),
}))
