"""Reference relational models trained from streamed shards."""
