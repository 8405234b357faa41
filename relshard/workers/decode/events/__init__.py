"""Event logs as a modality: reading (:mod:`.reader`), time parsing (:mod:`.timeparse`),
the pre-pass that partitions a log by sequence (:mod:`.partition`, :mod:`.listing`),
windows (:mod:`.windows`) and the stage that turns buckets into samples (:mod:`.stage`).
"""
