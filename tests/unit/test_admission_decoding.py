"""Admission before decoding (issue 32): a request waiting for its namespace's in-flight slot
has decoded nothing, a request past the waiting places is refused (429, Retry-After) without
decoding, and the answer is the one the decoded inputs give. A real engine on the tiny
backbones; the decoder is the routes' own (:func:`service.request_inputs.decode_items` on
base64 PNGs), wrapped to count its calls."""

from __future__ import annotations

import asyncio

import pytest

from adapters.errors import CapacityError
from adapters.format.archive import make_archive
from service.audio_inputs import audio_limits_from
from service.request_inputs import decode_items
from support.factories import head_adapter
from support.http_helpers import b64, png_bytes
from support.server import tiny_backbones_env

IMAGES = [b64(png_bytes((200, 30, 30))), b64(png_bytes((20, 160, 40), size=(64, 48)))]


@pytest.fixture
def engine(tmp_path, tiny_dir, text_backbone, vision_backbone):
    from service.engine import Engine
    from service.settings import Settings
    settings = Settings(store=str(tmp_path / "store"), backbones=tiny_backbones_env(tiny_dir),
                        admin_token="a" * 16, torch_threads=1, sync_interval_s=60,
                        namespace_max_inflight=1, namespace_max_waiting=1)
    eng = Engine(settings)
    eng.start()
    assert eng.ready, eng.error
    for task in ("pics", "team-b/pics"):
        archive = make_archive(head_adapter(tmp_path / task.replace("/", "-"), vision_backbone, task))
        eng.submit_registration(eng.register_archive, archive, task, None, None).result(60)
    yield eng
    eng.close()


def _counting_decoder(engine, calls: list, tag: str):
    audio = audio_limits_from(engine.settings)

    def decode() -> list:
        calls.append(tag)
        return decode_items(IMAGES, "image", "images", engine.limits, audio)
    return decode


async def _until(check, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"never happened: {what}")


def test_a_waiting_request_has_decoded_nothing_and_one_past_the_waiting_places_is_refused(engine):
    calls: list[str] = []

    async def run():
        alone = await engine.predict(["pics"], _counting_decoder(engine, calls, "alone"), "image")
        assert calls == ["alone"]
        async with engine.admitted("default"):  # the namespace's only slot, held
            waiter = asyncio.create_task(engine.predict(["pics"], _counting_decoder(engine, calls, "waiter"), "image"))
            await _until(lambda: engine.gate.waiting("default") == 1, "the request waits for the slot")
            assert calls == ["alone"]  # waiting: not decoded
            with pytest.raises(CapacityError) as refused:  # the one waiting place is taken
                await engine.predict(["pics"], _counting_decoder(engine, calls, "refused"), "image")
            assert refused.value.retry_after_s >= 1
            assert "TASKSWAP_NAMESPACE_MAX_WAITING" in refused.value.message
            other = await engine.predict(["team-b/pics"], _counting_decoder(engine, calls, "other"), "image")
            assert calls == ["alone", "other"]  # another namespace: its own slot, decoded at once
            assert not waiter.done()
        served = await waiter
        assert calls == ["alone", "other", "waiter"]  # decoded once admitted, the refused one never
        return alone, other, served

    alone, other, served = asyncio.run(run())
    for a, b in zip(alone[1][0].rows, served[1][0].rows):
        assert a["label"] == b["label"] and a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    assert [r.task for r in other[1]] == ["team-b/pics"]
    assert engine.gate.in_flight("default") == 0 and engine.gate.waiting("default") == 0


def test_a_decoding_error_after_admission_is_the_same_4xx_and_frees_the_slot(engine):
    from adapters.errors import InvalidInput

    def bad() -> list:
        return decode_items(["not base64 at all!"], "image", "images", engine.limits, audio_limits_from(engine.settings))

    async def run():
        with pytest.raises(InvalidInput) as exc:
            await engine.predict(["pics"], bad, "image")
        assert "images[0]" in exc.value.message
        assert engine.gate.in_flight("default") == 0
    asyncio.run(run())
