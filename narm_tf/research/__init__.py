"""What NARM is compared with: the session-kNN and rule baselines of the report."""
