"""Test and benchmark harness: nothing here is used by a store at runtime.

* :mod:`tierstore.testing.servers`: :class:`~tierstore.testing.servers.RedisCluster`, a local
  Redis Cluster built from the store's own embedded :class:`~tierstore.services.RedisServer`.
"""
