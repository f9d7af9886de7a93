"""secp256k1 primitives over libsecp256k1 (coincurve's bundled build)."""
