"""The long-running worker: the Trio nursery tree and what runs beside it.

- :mod:`.worker`: ``ftp-pooler worker``: poller, dispatcher, runners,
  publisher and API under one nursery, drained on SIGTERM.
- :mod:`.api`: liveness, readiness and metrics over Quart-Trio on Hypercorn.
- :mod:`.reload`: the connections file watched and applied without a restart.
"""
