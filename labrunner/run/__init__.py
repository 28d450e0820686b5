"""The pipeline of ``labrunner run``, one room per seam.

- ``lab.py``: ``run_lab`` (one run of the selected scenarios on one target, then its report),
  the secret, the warm-up threads, the render;
- ``schedule.py``: ``Pipeline``, how the scenarios follow each other (capture and sessions in
  the main thread, analyses in workers, results settled in scenario order);
- ``scenario.py``: ``ScenarioRun``, one scenario's capture, sessions and analysis;
- ``manifest.py``: the run folder's manifest.json, built from ``runfolder/records.py``;
- ``facts.py``: what is recorded about this machine and the target;
- ``inventory.py``: a class run (one run per target of the inventory) and its overview;
  ``turns.py``: its students taking turns on a shared host or account;
- ``outcome.py``: the options and results every room shares; ``interrupts.py``: Ctrl-C.
"""
