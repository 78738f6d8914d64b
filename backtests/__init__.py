"""Running a policy or baseline over a data split: equity, trades, metrics and reports."""
