"""A minimal call-handling receiver built on the real SDK, to show the simulator at work.

It is what the public samples do, in one file: answer IncomingCall from Event Grid, run a
two-choice menu, transfer, apologise and hang up when the transfer fails. The product itself
is the Functions app (``function_app.py``); this file exists so ``python -m simulator`` has
something to talk to before the app is running.

    python -m tools.example_receiver --port 8091 --acs-endpoint http://127.0.0.1:8090 --acs-key KEY
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from azure.communication.callautomation import (
    CallAutomationClient,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    TextSource,
)
from azure.communication.callautomation._shared.models import identifier_from_raw_id
from azure.core.credentials import AzureKeyCredential

log = logging.getLogger("example_receiver")

MENU = "Welcome. For sales press 1 or say sales. For support press 2 or say support."
TARGETS = {"sales": "+14255550101", "support": "8:acs:support-agent", "operator": "+14255550100"}
CHOICES = [
    RecognitionChoice(label="sales", phrases=["sales"], tone="one"),
    RecognitionChoice(label="support", phrases=["support"], tone="two"),
]


class App:
    def __init__(self, endpoint: str, key: str, public_url: str, audience: str, ai_endpoint: str) -> None:
        self.client = CallAutomationClient(endpoint, AzureKeyCredential(key))
        self.public_url = public_url
        self.ai_endpoint = ai_endpoint
        self.jwks = jwt.PyJWKClient(endpoint.rstrip("/") + "/calling/keys")
        self.audience = audience
        self.callers: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()

    def verify(self, authorization: str) -> None:
        token = authorization.removeprefix("Bearer ").strip()
        key = self.jwks.get_signing_key_from_jwt(token)
        jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=self.audience,
            issuer="https://acscallautomation.communication.azure.com",
        )

    def on_eventgrid(self, event: dict[str, Any]) -> None:
        if event["eventType"] == "Microsoft.Communication.IncomingCall":
            data = event["data"]
            props = self.client.answer_call(
                data["incomingCallContext"],
                self.public_url + "/callbacks",
                cognitive_services_endpoint=self.ai_endpoint,
            )
            with self.lock:
                self.callers[props.call_connection_id] = data["from"]["rawId"]

    def menu(self, ccid: str, prompt: str) -> None:
        caller = identifier_from_raw_id(self.callers[ccid])
        self.client.get_call_connection(ccid).start_recognizing_media(
            RecognizeInputType.CHOICES,
            caller,
            choices=CHOICES,
            play_prompt=TextSource(text=prompt),
            initial_silence_timeout=5,
            operation_context="menu",
        )

    def transfer(self, ccid: str, label: str) -> None:
        target = TARGETS[label]
        identifier = PhoneNumberIdentifier(target) if target.startswith("+") else identifier_from_raw_id(target)
        self.client.get_call_connection(ccid).transfer_call_to_participant(identifier, operation_context=label)

    def on_callback(self, event: dict[str, Any]) -> None:
        kind = event["type"].rsplit(".", 1)[-1]
        data = event["data"]
        ccid = data["callConnectionId"]
        connection = self.client.get_call_connection(ccid)
        if kind == "CallConnected":
            self.menu(ccid, MENU)
        elif kind == "RecognizeCompleted":
            self.transfer(ccid, data["choiceResult"]["label"])
        elif kind == "RecognizeFailed":
            with self.lock:
                self.attempts[ccid] = self.attempts.get(ccid, 0) + 1
                attempt = self.attempts[ccid]
            if attempt <= 2:
                self.menu(ccid, "Sorry, I did not get that. " + MENU)
            else:
                self.transfer(ccid, "operator")
        elif kind == "CallTransferFailed":
            connection.play_media(
                TextSource(text="Sorry, nobody can take your call now. Goodbye."), operation_context="goodbye"
            )
        elif kind == "PlayCompleted" and data.get("operationContext") == "goodbye":
            connection.hang_up(is_for_everyone=True)


def serve(app: App, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"[]")
            try:
                if self.path.startswith("/eventgrid"):
                    if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                        return self.reply(200, {"validationResponse": body[0]["data"]["validationCode"]})
                    for event in body:
                        app.on_eventgrid(event)
                elif self.path.startswith("/callbacks"):
                    try:
                        app.verify(self.headers.get("Authorization", ""))
                    except jwt.PyJWTError as exc:
                        return self.reply(401, {"error": str(exc)})
                    for event in body:
                        app.on_callback(event)
                else:
                    return self.reply(404, {"error": "unknown path"})
            except Exception as exc:  # the simulator retries on 5xx
                log.exception("handling failed")
                return self.reply(500, {"error": str(exc)})
            self.reply(200, None)

        def reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--acs-endpoint", required=True)
    p.add_argument("--acs-key", required=True)
    p.add_argument("--audience", default="00000000-0000-4000-8000-000000000001")
    p.add_argument("--ai-endpoint", default="https://ai-sim.cognitiveservices.azure.com/")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = App(args.acs_endpoint, args.acs_key, f"http://127.0.0.1:{args.port}", args.audience, args.ai_endpoint)
    server = serve(app, args.port)
    print(f"example receiver on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
