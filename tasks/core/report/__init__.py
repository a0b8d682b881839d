"""The HTML report (docs/monitoring.md#report), pure parts: the typed rows read from the warehouse
(rows.py), the SQL that reads them (sql.py), one plotly figure per section (figures.py) and the
self-contained page (page.py)."""
