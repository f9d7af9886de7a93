"""Settlement modes for a payout distribution: ``coinbase``, ``ctv`` and ``musig2``.

Each mode turns the same distribution into consensus bytes (coinbase outputs, a CTV fan-out,
or a jointly signed MuSig2 key-path spend); see docs/ and ARCHITECTURE.md "settlement modes".
"""
