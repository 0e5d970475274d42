"""The transfer layer: one task in, exactly one result out.

- :mod:`.boundary`: any message in, one result out that can be published.
- :mod:`.engine`: plans a task and runs its attempts over a session.
- :mod:`.localfs`: the one place that touches the local disk (confined paths,
  durable atomic writes, group commit).
- :mod:`.source_action`: what becomes of the source after success.
- :mod:`.retry`: backoff between attempts, as an immutable value.
"""
