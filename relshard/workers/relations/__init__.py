"""Relations between event types: the multivariate Hawkes fit (:mod:`.hawkes`, batched over
windows in :mod:`.batch`, whole-log in :mod:`.source_fit`), a simulator of known processes
(:mod:`.simulate`), and the records and captions made from a fit (:mod:`.describe`).
"""
