"""Calls the app places or joins, and their guards: the control API's requests, campaigns, number masking,
the dialing policy and the daily cap."""
