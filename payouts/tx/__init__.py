"""Bitcoin transaction primitives: serialization, hashes, weight, sigops, coinbase, sighash."""
