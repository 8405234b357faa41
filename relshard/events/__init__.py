"""Event logs as a modality, from a raw log to windows with Hawkes relations.

Driver side (before the Ray graph): :mod:`.expander` turns each log into inputs:
read (:mod:`.reader`, times by :mod:`.timeparse`), check (:mod:`.rowcheck`: bad rows
to the rejects ledger through :mod:`.row_rejects`), partition by sequence
(:mod:`.partition`, cut into parts by :mod:`.parts`, ties by :mod:`.ties`), and the
whole-log fit (:mod:`.source_fit`).

Worker side: :mod:`.stage` turns a bucket or part into samples, one per window
(:mod:`.windows`), each with a multivariate Hawkes fit (:mod:`.hawkes_fit`, the EM
kernels in :mod:`.em_kernel`, batched over windows by :mod:`.fit_batch`) described as
records and captions (:mod:`.describe`). :mod:`.simulate` draws known processes for
tests and benchmarks. (The neural Hawkes model trained on the shards is
:mod:`relshard.training.models.hawkes_model`.)
"""
