"""The evaluate stage: metrics, baselines, issue 7's target, the reports and the gap pictures."""
