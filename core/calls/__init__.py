"""A call: its events (parsed and authenticated), its state and duplicate filter, routing, and what is sent to ACS."""
