"""MuSig2 (BIP-327) wrapper and signing-session tests."""
