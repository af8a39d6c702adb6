"""Performance runs through the VIP (issue 6), in Jepsen's three pieces:

    workload.py   the locust user classes: the runbook's traffic
    load.py       the generators: locust (master + workers) and wrk, run in the client host
    summary.py    what the CSVs say: rates, percentiles, failures, ratios
    report.py     one self-contained HTML page with plots
    run.py        the order of phases and where each run keeps its history

The faults a run injects mid-load are the suites' own (haconform/faults/nemesis.py).
"""
