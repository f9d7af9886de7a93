"""Share accounting: the share log, payout windows (TIDES, PPLNS, PROP), value weighting."""
