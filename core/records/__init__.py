"""Call records: Event Grid's calling events and the flows' outcomes folded into one record per call."""
