"""Long-lived objects are put out of the garbage collector's way once made (``clients.freeze_long_lived_objects``)."""

from __future__ import annotations

import gc

from core.platform import clients


def test_making_a_process_wide_client_freezes_what_exists(monkeypatch):
    monkeypatch.setattr(clients, "_cache", {})
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        made = clients._once("probe", lambda: [object() for _ in range(10)])
        assert gc.get_freeze_count() > 0  # the client (and everything before it) is frozen
        frozen = gc.get_freeze_count()
        assert clients._once("probe", lambda: []) is made  # kept: no second client, nothing frozen again
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
