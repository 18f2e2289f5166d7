"""The model store: one trained model serving deletion requests over its life (docs/method.md section 7).

Floor 3: imports the core, :mod:`pgu.data` and :mod:`pgu.zoo`; never :mod:`pgu.bench`.

* :mod:`pgu.store.model_store` - :class:`ModelStore` (``pgu store init``, ``pgu forget``, ...).
* :mod:`pgu.store.ledger` - the SQLite ledger with its hash chain.
* :mod:`pgu.store.sample_files` - sample files (``.npz``) and content digests.
"""
