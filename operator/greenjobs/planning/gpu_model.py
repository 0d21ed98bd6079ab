"""GPU power/performance model: how much slower and how much less power a GPU training job runs under a cap.

With x = cap / TDP (clamped to [MIN_X, 1], the range the fit covers):

    throughput(x) / throughput(TDP) = 1 - A * (1 - x)**B
    draw(x) / draw(TDP)             = 1 - C * (1 - x),   an uncapped job drawing U * TDP

A, B, C, U were fitted (bench/power_capping.py --fit-zeus) to the published power traces of Zeus
(You, Chung, Chowdhury, NSDI'23; V100 and A40, ImageNet/ResNet-50, SQuAD and Sentiment140/BERT). Pure
code: the fleet planner uses it for a capped job's run time, the benchmarks for energy and CO2e.
"""

from datetime import timedelta

MODEL_A = 2.384  # throughput loss scale
MODEL_B = 2.93  # throughput loss exponent: flat near TDP, steep below ~60 %
MODEL_C = 0.832  # mean draw falls 0.832 % per 1 % of TDP taken off the cap
MODEL_U = 0.888  # an uncapped training job draws 88.8 % of TDP on average
MIN_X = 0.5


def _clamp(x: float) -> float:
    return min(max(x, MIN_X), 1.0)


def throughput(x: float) -> float:
    """Training throughput under a cap of x * TDP, relative to the uncapped job."""
    return 1.0 - MODEL_A * float((1.0 - _clamp(x)) ** MODEL_B)


def draw_fraction(x: float) -> float:
    """Mean per-GPU power under a cap of x * TDP, as a fraction of TDP."""
    return MODEL_U * (1.0 - MODEL_C * (1.0 - _clamp(x)))


def capped_run_time(uncapped: timedelta, cap_fraction: float | None) -> timedelta:
    """Run time of a job that takes `uncapped` at full power, under a cap of cap_fraction * TDP.

    None (no cap) returns `uncapped`. A carbon-aware cap varies with the grid: pass its lowest cap so
    that a deadline planned on this run time holds whatever the grid does.
    """
    if cap_fraction is None or cap_fraction >= 1.0:
        return uncapped
    return uncapped / throughput(cap_fraction)
