"""Training from shards: the epoch plan, safe decoding, ``ShardStream`` and ``ShardLoader``.

Modules that need torch import it themselves; ``import relshard`` never does
(``relshard.ShardStream`` and ``relshard.ShardLoader`` load lazily).
"""
