"""The pool's Mining Protocol endpoint (sv2-spec 05-Mining-Protocol.md): sans-I/O sessions
(:mod:`sv2.mining.session`) over channels, jobs and shares, driven by the asyncio
:class:`~sv2.mining.server.MiningServer` on the shared Noise listener. docs/mining.md."""
