"""The host-worker protocol (the subset devhost speaks), and the in-process worker that answers it."""
