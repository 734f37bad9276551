"""The archive of a multipart upload: the ``file`` field, read whole, refused with a 400
naming the problem when it is missing, text instead of a file, or empty. ``POST /adapters``
and ``POST /shared-sets`` read their archives through it.

>>> import asyncio
>>> from starlette.datastructures import FormData
>>> try:
...     asyncio.run(read_file(FormData([("file", "not a file")]), "the adapter archive",
...                           "curl -F file=@adapter.zip ...", "the uploaded archive is empty"))
... except Exception as exc:
...     print(exc)
multipart field 'file' (the adapter archive) is missing: curl -F file=@adapter.zip ...
"""

from __future__ import annotations

from starlette.datastructures import FormData

from adapters.errors import InvalidInput


async def read_file(form: FormData, what: str, usage: str, empty: str) -> bytes:
    """The bytes of the form's ``file`` field; ``what`` names it and ``usage`` shows how to
    send it when it is missing; ``empty`` is the message for a file of no bytes."""
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidInput(f"multipart field 'file' ({what}) is missing: {usage}")
    data = await upload.read()
    if not data:
        raise InvalidInput(empty)
    return data
