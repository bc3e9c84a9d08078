"""A small stand-in for the Azure Functions host, for machines without Core Tools.

It plays the host's part only: HTTP triggers at ``/<routePrefix>/<route>`` with their auth levels and keys,
Event Grid triggers at ``/runtime/webhooks/eventgrid?functionName=<name>`` with the subscription-validation
handshake. Indexing ``function_app.py``, converting each trigger's input and invoking the function are done by
Microsoft's ``azure-functions-runtime`` (pinned in requirements.txt, the worker Azure runs on Python 3.13),
driven in process over the host-worker protocol (``devhost/rpc``). devhost imports nothing of the app.
"""
