"""The HTML report (docs/monitoring.md#report): read the warehouse, land the dashboard in the lake."""
