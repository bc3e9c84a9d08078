"""The log redaction filter (core/platform/observability.py): phone and card numbers masked in every record's rendered
text (message with its arguments, tracebacks, stacks), whatever shape they come in, on every root handler."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from core.platform import observability
from core.platform.observability import CallIdsFilter, RedactFilter, call_scope, install_redaction, mask_id, redact

NUMBER = "+14255550123"
MASKED = "+*******0123"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+14255550123", "+*******0123"),
        ("4:+14255550123", "4:+*******0123"),
        ("4:14255550123", "4:*******0123"),
        ("%2B14255550123", "%2B*******0123"),
        ("%2b14255550123", "%2b*******0123"),
        ("4%3A%2B14255550123", "4%3A%2B*******0123"),
        ("tel%3A%2B14255550123", "tel%3A%2B*******0123"),
        ("sip:+14255550123@sbc.example", "sip:+*******0123@sbc.example"),
        ("tel:+14255550123", "tel:+*******0123"),
        ("+1 (425) 555-0123", "+*******0123"),
        ("+1 425 555 0123", "+*******0123"),
        ("+1.425.555.0123", "+*******0123"),
        ("+442071838750", "+********8750"),
        ("+4930123456", "+******3456"),  # a short national number: 10 digits
        ("call from 4:+14255550123 to +18005550100", "call from 4:+*******0123 to +*******0100"),
        ("['4:+14255550123', '8:acs:agent']", "['4:+*******0123', '8:acs:agent']"),
        ('{"caller": "+14255550123"}', '{"caller": "+*******0123"}'),
        # Card numbers (Luhn-valid 13 to 19 digits), bare or grouped.
        ("card 4111111111111111 entered", "card ************1111 entered"),
        ("4111 1111 1111 1111", "************1111"),
        ("4111-1111-1111-1111", "************1111"),
        ("378282246310005", "***********0005"),
        ("digits=5555555555554444;", "digits=************4444;"),
    ],
)
def test_numbers_are_masked_but_their_last_four_digits(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-12T10:11:12.123456+00:00",  # times and offsets
        "2026-03-12 10:11:12,345 INFO core.calls.state state of call-1 changed concurrently; retrying (2)",
        "aHR0cHM6Ly9hcGkuZXhh+1234567890bXBsZS5jb20=",  # a base64 id with "+digits" inside a word
        "8:acs:00000000-0000-4000-8000-000000000001_00000025-1234-5678",
        "4111111111111112",  # not Luhn-valid: an id, not a card
        "call-1 took 1234567 us",
        "seq +123",  # too short for a phone number
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "",
    ],
)
def test_what_is_not_a_number_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_mask_id() -> None:
    assert mask_id("4:+14255550123") == "4:+*******0123"
    assert mask_id("8:acs:agent") == "8:acs:agent"
    assert mask_id(None) == "-"


# -- the filter on a handler ----------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("tests.redaction")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    yield logger, stream
    logger.handlers, logger.propagate = [], True


def test_numbers_in_args_of_every_kind(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.info("incoming call from %s to %s", "4:+14255550123", NUMBER)
    log.info("participants now %s", ["4:+14255550123", "8:acs:agent"])
    log.info("state %s", {"caller": "4:+14255550123", "outcome": {"transfer_target": NUMBER}})
    log.info("%(caller)s called", {"caller": NUMBER})  # mapping args
    log.debug("a tuple %r", (NUMBER,))
    log.warning("refused: %s", ValueError(f"cannot call {NUMBER}"))
    log.info(f"formatted by the caller {NUMBER} with a literal 100%")  # no args: a % is not a format here
    log.info({"number": NUMBER})  # a message that is not a string
    text = stream.getvalue()
    assert "14255550123" not in text and "4255550123" not in text, text
    assert text.count(MASKED) == 10
    assert "with a literal 100%\n" in text


def test_arguments_that_do_not_fit_their_format_are_masked_not_printed_raw(
    captured: tuple[logging.Logger, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    log, stream = captured
    log.info("%d calls", f"from {NUMBER}")  # logging would print the record's args to stderr
    assert "14255550123" not in stream.getvalue() + capsys.readouterr().err
    assert MASKED in stream.getvalue()


def test_numbers_in_exceptions_and_their_causes(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    try:
        try:
            raise KeyError("4:+14255550123")
        except KeyError as exc:
            raise RuntimeError(f"transfer to {NUMBER} failed") from exc
    except RuntimeError:
        log.exception("handler failed")
    text = stream.getvalue()
    assert "14255550123" not in text, text
    assert "Traceback (most recent call last)" in text and "RuntimeError: transfer to +*******0123 failed" in text
    assert "KeyError: '4:+*******0123'" in text


def test_a_traceback_without_numbers_keeps_its_exception(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, _ = captured
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(RedactFilter())
    log.addHandler(keep)
    try:
        raise ValueError("nothing personal")
    except ValueError:
        log.exception("failed")
    assert records[-1].exc_info is not None  # Application Insights still gets the exception as such


def test_stack_info_is_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured

    def dial(number: str) -> None:
        log.info("dialing", stack_info=True)

    dial("+14255550123")  # the stack shows this line
    assert "Stack (most recent call last)" in stream.getvalue() and 'dial("+*******0123")' in stream.getvalue()
    assert "14255550123" not in stream.getvalue()


def test_card_numbers_and_levels(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        log.log(level, "digits %s", "4111111111111111")
    assert "4111111111111111" not in stream.getvalue()
    assert stream.getvalue().count("************1111") == 5


def test_with_the_call_ids_filter_before_it(captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    handler = log.handlers[0]
    handler.filters.insert(0, CallIdsFilter())
    with call_scope("test", call_connection_id="conn-1", call_ref="ref%1"):
        log.info("call from %s at 100%%", NUMBER)
    assert stream.getvalue().strip().endswith(f"call from {MASKED} at 100% [call=conn-1 ref=ref%1]")


# -- installed on the root handlers ----------------------------------------------------------------


@pytest.fixture
def root_handler() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(observability.FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_install_redaction_covers_every_root_handler_once_and_last(root_handler: io.StringIO) -> None:
    handler = logging.getLogger().handlers[-1]
    handler.addFilter(CallIdsFilter())
    install_redaction()
    install_redaction()
    assert [type(f) for f in handler.filters] == [CallIdsFilter, RedactFilter]
    logging.getLogger("devhost").warning("function incoming_call failed on event for %s", "4:+14255550123")
    assert "4:+*******0123" in root_handler.getvalue() and "14255550123" not in root_handler.getvalue()


def test_configure_installs_it_on_the_handlers_the_host_set_up(
    root_handler: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "_configured", False)
    levels = {name: logging.getLogger(name).level for name in ("core", "handlers", "blueprints", "azure")}
    handler = logging.getLogger().handlers[-1]
    try:
        observability.configure("DEBUG")
        assert isinstance(handler.filters[-1], RedactFilter)
        logging.getLogger("handlers.incoming_call").debug("incoming call from %s", NUMBER)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert MASKED in root_handler.getvalue() and "14255550123" not in root_handler.getvalue()
