"""Scheduling transfers by connection, so a slow or dead server never slows the others.

- :mod:`.scheduler`: per-connection FIFO queues of tasks with not-before
  times, and the pure decision which task a free runner starts now (round
  robin over connections that can give a session now).
- :mod:`.breaker`: a circuit breaker per server (closed, open, half-open),
  pure values; the session pool keeps one per connection and consults it
  before opening a session.
- :mod:`.runners`: the Trio glue: long-lived runners that ask the scheduler
  for work, run one attempt, and park until something changes.
- :mod:`.transfers`: tasks through the transfer engine on those runners, one
  result each (what ``copy`` and the worker share).
- :mod:`.backpressure`: how much consumed, unfinished work the worker holds
  before it stops fetching (pure policy).
"""
