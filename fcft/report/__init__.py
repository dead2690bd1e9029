"""A sweep's report from its finished run directories: report.py writes it (report.md, results.csv, plots) and
is `python -m fcft.report`; rows.py reads the runs, table.py draws the experiment's published-layout table,
plots.py the PNGs."""
