"""Reading a recording from ACS as a stream that resumes, with a Range request, where a connection broke.

A recording can be gigabytes long and a connection can drop midway: resuming from the last byte received keeps
memory constant and saves downloading it all again (Event Grid's redelivery would start over).
"""

from __future__ import annotations

import io
import logging
import re
import time
from typing import Any

from .auth import RecordingAuth
from .errors import CopyFailed
from .urls import SafeUrl, refuse_redirect

log = logging.getLogger("core.recordings")

READ_SIZE = 1024 * 1024
RESUME_ATTEMPTS = 5  # consecutive failures without progress
MAX_RESUMES = 8  # resumes in one download, however much each made progress


class ResumableDownload(io.RawIOBase):
    """A recording's bytes as a stream; a dropped connection resumes from where it broke (Range)."""

    def __init__(
        self, session: Any, url: SafeUrl, auth: RecordingAuth, *, attempts: int = RESUME_ATTEMPTS, timeout: float = 60.0
    ) -> None:
        if not isinstance(url, SafeUrl):
            raise TypeError("ResumableDownload takes a checked SafeUrl (HostAllowList.check)")
        self._session = session
        self._url = url
        self._auth = auth
        self._attempts = attempts
        self._timeout = timeout
        self._response: Any = None
        self.offset = 0
        self.size: int | None = None
        self.resumes = 0

    def _open(self) -> None:
        headers = self._auth.headers("GET", self._url)
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        response = self._session.get(
            self._url.url, headers=headers, stream=True, timeout=self._timeout, allow_redirects=False
        )
        refuse_redirect(response, self._url)
        if response.status_code not in (200, 206):
            status = response.status_code
            response.close()
            raise CopyFailed(f"GET {self._url} answered {status}")
        if self.offset and response.status_code != 206:
            response.close()
            raise CopyFailed("the recording host ignored the Range header on resume")
        if response.status_code == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != self.offset:
                response.close()
                raise CopyFailed(f"resumed at the wrong offset: {response.headers.get('Content-Range')!r}")
            self.size = int(m.group(2))
        elif response.headers.get("Content-Length"):
            self.size = int(response.headers["Content-Length"])
        self._response = response

    def readable(self) -> bool:
        return True

    def read(self, n: int = READ_SIZE) -> bytes:  # type: ignore[override]
        import requests
        import urllib3

        failures = 0
        while True:
            if self.size is not None and self.offset >= self.size:
                return b""
            try:
                if self._response is None:
                    self._open()
                data = self._response.raw.read(n)
                if not data:
                    if self.size is None or self.offset >= self.size:
                        return b""
                    raise urllib3.exceptions.ProtocolError("connection closed early")
                self.offset += len(data)
                return data
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                failures += 1
                self.close_response()
                if failures > self._attempts or self.resumes >= MAX_RESUMES:
                    raise CopyFailed(f"download kept failing at byte {self.offset}: {exc}") from exc
                self.resumes += 1
                log.warning("recording download broke at byte %d (%s); resuming", self.offset, exc)
                time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

    def close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self.close_response()
        super().close()
