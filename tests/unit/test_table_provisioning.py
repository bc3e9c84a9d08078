"""Tables and the QA container are deployed in Azure, where the app's roles are scoped to each of them: creating one
may be refused (403). That, like "exists", means it is there; any other failure is raised."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from core.platform.tables import TableBacked
from core.recordings.copier import RecordingCopier


class Creator:
    def __init__(self, exc: Exception | None) -> None:
        self.exc, self.calls = exc, 0

    def _create(self) -> None:
        self.calls += 1
        if self.exc is not None:
            raise self.exc

    create_table = create_container = _create


def _refused(status: int) -> HttpResponseError:
    exc = HttpResponseError(message=f"status {status}")
    exc.status_code = status
    return exc


def _table(exc: Exception | None) -> tuple[TableBacked, Creator]:
    store, creator = TableBacked(), Creator(exc)
    store._table = creator
    return store, creator


@pytest.mark.parametrize("exc", [None, ResourceExistsError("exists"), _refused(403)])
def test_a_table_there_or_not_ours_to_create_is_used(exc: Exception | None) -> None:
    store, creator = _table(exc)
    store._ensure()
    store._ensure()
    assert creator.calls == 1


@pytest.mark.parametrize("status", [401, 404, 500, 503])
def test_any_other_failure_to_create_a_table_is_raised(status: int) -> None:
    store, _ = _table(_refused(status))
    with pytest.raises(HttpResponseError):
        store._ensure()
    assert not store._ensured


@pytest.mark.parametrize("status, raised", [(403, False), (500, True)])
def test_the_qa_container_is_treated_alike(status: int, raised: bool) -> None:
    creator = Creator(_refused(status))
    copier = RecordingCopier(container=creator, session=None, auth=None, allow=None)  # type: ignore[arg-type]
    if raised:
        with pytest.raises(HttpResponseError):
            copier._ensure_container()
    else:
        copier._ensure_container()
        assert copier._ensured
