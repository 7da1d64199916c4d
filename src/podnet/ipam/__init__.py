"""Address allocation on store transactions, so no two processes ever hand out one address."""
