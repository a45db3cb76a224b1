"""The lab engine (issue 16; docs/lab-format.md): trainee exercises on a twin.

| module | what |
|---|---|
| ``format`` | ``lab.yaml`` and ``solution.yaml``: loading, schema, checks against the topology |
| ``session`` | the lab's twin: start (detached owner process), stop, restart, find the active lab |
| ``progress`` | ``lab.json``: submissions, hints, check results, tasks done, score |
| ``trainee`` | submit, hint, verify, status |
| ``checks`` | the check kinds: answer, reach, mission, rule, service, blue, step, detector, topology |
| ``data`` | the lab's traffic into DuckDB (``lab query``), detectors over it (``lab alerts``) |
| ``solution`` | runs ``solution.yaml`` on the running lab (CI) |
| ``instructor`` | the report over many trainees' runs: table, CSV, HTML |
"""
