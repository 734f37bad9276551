"""The one reader of a multipart upload's archive (service/upload_form.py), shared by
``POST /adapters`` and ``POST /shared-sets``: the bytes, or a 400 naming the field, what it
should hold and how to send it (missing, sent as text) or the route's message (empty).
On Starlette's own form objects."""

from __future__ import annotations

import asyncio
import io

import pytest

from adapters.errors import InvalidInput
from service.upload_form import read_file
from starlette.datastructures import FormData, UploadFile

WHAT, USAGE, EMPTY = "the adapter archive", "curl -F file=@adapter.zip ...", "the uploaded archive is empty"


def _read(form: FormData) -> bytes:
    return asyncio.run(read_file(form, WHAT, USAGE, EMPTY))


def test_the_file_s_bytes():
    assert _read(FormData([("file", UploadFile(io.BytesIO(b"PK\x03\x04zip"), filename="a.zip"))])) == b"PK\x03\x04zip"


@pytest.mark.parametrize("form, message", [
    (FormData([("heads", UploadFile(io.BytesIO(b"x"), filename="h.zip"))]),
     "multipart field 'file' (the adapter archive) is missing: curl -F file=@adapter.zip ..."),
    (FormData([("file", "adapter.zip")]),
     "multipart field 'file' (the adapter archive) is missing: curl -F file=@adapter.zip ..."),
    (FormData([("file", UploadFile(io.BytesIO(b""), filename="a.zip"))]), "the uploaded archive is empty"),
])
def test_missing_text_or_empty_is_a_400_with_the_route_s_message(form, message):
    with pytest.raises(InvalidInput) as exc:
        _read(form)
    assert exc.value.message == message
