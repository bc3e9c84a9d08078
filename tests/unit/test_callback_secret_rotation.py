"""A rotation of CALLBACK_SECRET keeps calls in progress: URLs signed with the previous key still pass."""

from __future__ import annotations

import base64

import pytest

from core.calls.callback_auth import AuthError, CallbackAuthenticator, sign_call_ref
from core.platform.settings import SettingsError, load
from tests.unit.test_settings import base_env

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32


def _auth(previous: bytes | None) -> CallbackAuthenticator:
    return CallbackAuthenticator(
        openid_config_url="https://127.0.0.1:1/none", issuer="i", audience="a", secret=NEW, previous_secret=previous
    )


def test_a_url_signed_with_the_previous_key_passes_during_a_rotation() -> None:
    _auth(OLD).verify_call_token("ref-1", sign_call_ref(OLD, "ref-1"))
    _auth(OLD).verify_call_token("ref-1", sign_call_ref(NEW, "ref-1"))


def test_without_a_previous_key_an_old_url_is_refused() -> None:
    with pytest.raises(AuthError):
        _auth(None).verify_call_token("ref-1", sign_call_ref(OLD, "ref-1"))


def test_a_url_signed_with_an_unknown_key_is_refused_during_a_rotation() -> None:
    with pytest.raises(AuthError):
        _auth(OLD).verify_call_token("ref-1", sign_call_ref(OTHER, "ref-1"))
    with pytest.raises(AuthError):
        _auth(OLD).verify_call_token("ref-1", None)


def test_the_previous_key_setting_is_validated_like_the_current_one() -> None:
    env = base_env(CALLBACK_SECRET_PREVIOUS=base64.b64encode(OLD).decode())
    assert load(env).callback_secret_previous == OLD
    with pytest.raises(SettingsError, match="CALLBACK_SECRET_PREVIOUS: must decode to at least 32 bytes"):
        load(base_env(CALLBACK_SECRET_PREVIOUS=base64.b64encode(b"short").decode()))
    assert load(base_env()).callback_secret_previous is None
