"""The Azurite fixture gives real Blob and Table storage on loopback."""

import uuid

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient


def test_blob_round_trip(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(f"c{uuid.uuid4().hex[:12]}")
    container.upload_blob("hello.txt", b"hello")
    assert container.download_blob("hello.txt").readall() == b"hello"


def test_table_etag_concurrency(azurite):
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError

    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table(f"t{uuid.uuid4().hex[:12]}")
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})
    first = table.get_entity("p", "r")
    table.update_entity(
        {"PartitionKey": "p", "RowKey": "r", "n": 2},
        etag=first.metadata["etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    try:
        table.update_entity(
            {"PartitionKey": "p", "RowKey": "r", "n": 3},
            etag=first.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )
    except ResourceModifiedError:
        pass
    else:
        raise AssertionError("a stale ETag must be refused")
    assert table.get_entity("p", "r")["n"] == 2
