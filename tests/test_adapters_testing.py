"""The offline-testing kit: the scripted adapter and the emulator fixture."""

from __future__ import annotations

import pytest

from apiwrap.adapters import Adapter, Rejected, Throttled, VendorAnswer, create_adapter
from apiwrap.adapters.base import Label
from apiwrap.adapters.emulators.fakes import fake_classify, solid_png


async def test_scripted_adapter_follows_its_script(scripted_adapter) -> None:
    answer = VendorAnswer((Label("dog", 0.6), Label("cat", 0.6)), "v2", "{}")
    adapter = scripted_adapter(
        "cat", Throttled("slow down", retry_after=0.5), answer, ["cat", Rejected("no")]
    )
    assert isinstance(adapter, Adapter)
    image = solid_png()
    assert (await adapter.label_batch([image]))[0].top1 == "cat"
    with pytest.raises(Throttled):
        await adapter.label_batch([image])
    assert (await adapter.label_batch([image]))[0].top1 == "cat"  # the tie rule: smallest name
    first, second = await adapter.label_batch([image, image])
    assert first.top1 == "cat" and isinstance(second, Rejected)
    assert (await adapter.label_batch([image]))[0].top1 == "cat"  # script spent: `then`
    assert len(adapter.calls) == 5


async def test_scripted_adapter_then_label(scripted_adapter) -> None:
    adapter = scripted_adapter(then="Great White Shark")
    [answer] = await adapter.label_batch([b"x"])
    assert answer.top1 == "great white shark"


def test_fake_classify_follows_the_dominant_colour() -> None:
    answers = fake_classify([solid_png((250, 0, 0)), solid_png((0, 250, 0)), solid_png((0, 0, 250))])
    assert [labels[0][0] for labels in answers] == ["goldfish", "tree frog", "jellyfish"]
    assert all(abs(sum(score for _, score in labels) - 1.0) < 1e-5 for labels in answers)


@pytest.mark.parametrize("vendor", ["aws", "google", "azure", "clarifai"])
async def test_every_emulated_vendor_gives_the_same_labels(
    vendor_emulator, monkeypatch, tmp_path, vendor
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "GOOGLE_API_KEY", "CLARIFAI_PAT"):
        monkeypatch.delenv(name, raising=False)
    running = vendor_emulator(vendor)
    adapter = create_adapter(vendor, endpoint=running.endpoint)
    image = solid_png((120, 140, 90))
    [answer] = await adapter.label_batch([image])
    expected = fake_classify([image])[0]
    assert [(label.name, label.score) for label in answer.labels] == expected
    await adapter.aclose()
