"""What a configuration costs to serve: the machine's price per hour spread over what it serves.

A leaf: plain arithmetic that the report, the dashboard, the export and the verification's
cost objective share.
"""

from __future__ import annotations


def cost_per_million(throughput: float | None, price_per_hour: float | None) -> float | None:
    """Cost of one million inferences at `throughput` inferences/s on a machine of `price_per_hour`
    (any currency); None when either is unknown or nothing was served."""
    if price_per_hour is None or throughput is None or throughput <= 0:
        return None
    return price_per_hour / (throughput * 3600.0) * 1e6
