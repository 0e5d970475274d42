"""The command line: ``ftp-pooler`` and its commands other than the worker.

- :mod:`.main`: argument parsing, signals, exit statuses (:func:`.main.main`).
- :mod:`.batch`: ``copy``, tasks from a JSON-lines file without Kafka.
- :mod:`.checks`: ``copy --dry-run`` and ``check-connection``.
- :mod:`.progress`: what ``copy`` shows while it runs.
- :mod:`.submit`: ``submit``, tasks to the input topic.
"""
