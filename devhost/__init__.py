"""A small stand-in for the Azure Functions host, for machines without Core Tools.

It loads ``function_app.py`` the way the host's worker indexes it (through the ``azure-functions``
library's own list of registered functions and their bindings) and serves them as the host
does: HTTP triggers at ``/<routePrefix>/<route>`` with their auth levels and keys, Event Grid
triggers at ``/runtime/webhooks/eventgrid?functionName=<name>`` with the subscription-validation
handshake. It imports nothing else of the app.
"""
