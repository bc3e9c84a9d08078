"""Recordings: copying call recordings from ACS into Blob Storage, checked, verified and split per participant."""
