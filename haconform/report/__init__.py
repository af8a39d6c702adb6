"""The verdict of a run and the trends across runs.

    verdict.py   what a run says per MUST (held / broken / waived / not tested), its figures, findings
    html.py      reports/verdict.html: the verdict page with its evidence (self-contained)
    trends.py    reports/trends.html over results/<ts>/ and `haconform report --compare A B`
    plugin.py    writes verdict.json/html at the end of every `pytest suites` session
"""
