"""Noncustodial payout engine for Bitcoin mining pools.

Data flow (see ARCHITECTURE in the README): share events -> :mod:`payouts.accounting` ->
:mod:`payouts.distribution` -> :mod:`payouts.settlement` -> coinbase / transactions.
"""

__version__ = "0.1.0"
