"""``inferq-ops bench``: raw model speed, the pipeline Kafka → Redis, and peer servers, in one run.

Modules: :mod:`corpus` (the texts), :mod:`raw` (tokenise + forward in a loop), :mod:`load`
(closed-loop load generators for inferq and for HTTP peers), :mod:`peers` (install, start and stop
infinity-emb, Ray Serve, … in their own virtualenvs), :mod:`report` (table, ``bench.json``, plot),
:mod:`run` (the whole sequence, with progress).
"""
