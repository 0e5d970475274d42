"""The Kafka layer: kafka-python clients, whose blocking calls run in ``trio.to_thread``.

- :mod:`.clients`: consumer and producer settings from our settings, and the
  producer state kafka-python keeps to itself.
- :mod:`.security`, :mod:`.oauth`: TLS files, brokers' TLS and OAUTHBEARER
  tokens, checked at start-up.
- :mod:`.poller`: the one owner of the ``KafkaConsumer`` (poll, pause, commit).
- :mod:`.deliveries`: consumed messages on their way to the transfer runners.
- :mod:`.offsets`: which offsets may be committed (pure bookkeeping).
- :mod:`.publisher`: results to Kafka, acknowledgements back, a stalled
  producer replaced (when: :mod:`.recovery`, pure decisions);
  :mod:`.partitioner` picks a result's partition.
"""
