"""Bitcoin node backends behind one interface: bitcoind over JSON-RPC, or Bitcoin Core's
consensus code in-process through libbitcoinkernel (the embedded default)."""
