"""A local simulator of the Azure Communication Services Call Automation service.

It speaks the service's wire contract (REST API 2026-03-12 with HMAC-SHA256 auth, CloudEvents
webhook callbacks signed with a JWT, Event Grid deliveries, recordings to download) so that the
real ``azure-communication-callautomation`` client and a real Functions app can be tested on a
laptop or in CI. It is a tool beside the app: the app never imports it.
"""

API_VERSION = "2026-03-12"
