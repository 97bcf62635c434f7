"""What reads result files and concludes from them: comparisons and the rank rule
(comparisons), the board's families and rank intervals, rank-group stability (stability), the
power analysis (power), the replication check (agreement), the regression gate (compare) and
re-runs compared with a folder (reproduce). The interval arithmetic the run needs while pooling
stays in fexbench.core (stats), so the engine never imports upward.
"""
