"""From dataset rows to device batches.

``datasets/`` lists clips (one module per layout; ``datasets/sample/`` is the embedded
synthetic corpus, with its generator, captions and attribute questions), ``rows`` is the record
they return, ``scoring`` the attribute questions a dataset may register for validation;
``clip_dataset`` decodes and assembles one sample, ``loader`` (with ``sharding``, ``watchdog``,
``blocklist``) batches them, ``tokenizer`` and ``preprocess`` turn captions and frames into tensors.

Deliberately empty: config validation imports ``kvideo.data.datasets`` (to fill the
dataset registry) and must not pay for torch/av/decord imports on the way.
"""
