"""Regtest node harness: find or build bitcoind (:mod:`regtest.build`) and start/stop
throwaway regtest nodes (:mod:`regtest.harness`)."""
