"""``inferq-ops bench``: raw model speed, the pipeline Kafka → Redis, and peer servers, in one run.

Modules: :mod:`corpus` (the texts: ~40-token and mixed-length), :mod:`raw` (tokenise + forward in a
loop), :mod:`load` (closed-loop load generators for inferq and for HTTP peers), :mod:`peers`
(install, start and stop infinity-emb, Ray Serve, … in their own virtualenvs), :mod:`trusted`
(measurements in alternation, the median ratio and its spread), :mod:`padding` (padding waste from
the worker's batch records), :mod:`report` (table, ``bench.json``, plot), :mod:`run` (the whole
sequence, with progress).
"""
