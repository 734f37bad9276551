"""A fit request's examples checked with the rules of ``/predict`` and registration, at once.

``POST /adapters/{task}/fit`` answers 400/422 before a job is queued when an example would
be refused by ``/predict`` (texts: :func:`service.inputs.check_texts`; images: bytes,
pixels per image and the summed pixels of the request, decoded within the decode budget)
or a label by the registration rule (:func:`adapters.format.labels.label_problems`).
Images are handed to the fit child *downscaled* (decoded to at most
``TASKSWAP_IMAGE_DECODE_SIDE`` on their long side and re-encoded as PNG), so a 40 MP
upload never costs its full size in the child. Labels are NFC-normalised.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, replace

from adapters.errors import InvalidInput
from adapters.format.labels import label_problems, nfc_labels
from service.inputs import (InputLimits, base64_image_bytes, check_request_pixels, check_texts,
                            decode_image)


@dataclass
class FitExamples:
    texts: list[str] | None
    images: list[str] | None  # base64 PNG, downscaled
    labels: list[str]
    label_names: list[str] | None


def check_fit_examples(body, limits: InputLimits) -> FitExamples:
    """The request's examples and labels, checked and normalised; :class:`InvalidInput`
    (400) naming every problem otherwise. Images are decoded here: call it off the event loop."""
    texts = check_job_texts(body.texts, limits) if body.texts is not None else None
    images = check_job_images(body.images, "images", limits) if body.images is not None else None
    labels, names = _labels(body.labels, body.label_names)
    return FitExamples(texts, images, labels, names)


def check_job_texts(texts: list[str], limits: InputLimits, field: str = "texts") -> list[str]:
    """A training job's texts under /predict's text rules (any count: the job's limit bounds it)."""
    return check_texts(texts, replace(limits, max_inputs=max(len(texts), 1)), field)


def check_job_images(images: list[str], field: str, limits: InputLimits) -> list[str]:
    """A training job's base64 images under /predict's image rules and summed pixel budget,
    decoded and handed on downscaled, as base64 PNG. Decodes: call it off the event loop."""
    names = [f"{field}[{i}]" for i in range(len(images))]
    raws = [base64_image_bytes(b64, n, limits) for b64, n in zip(images, names)]
    check_request_pixels(raws, limits)  # the same summed budget as one /predict request
    return [_png_b64(decode_image(raw, n, limits)) for raw, n in zip(raws, names)]


def _labels(labels: list[str], label_names: list[str] | None) -> tuple[list[str], list[str] | None]:
    distinct = label_names if label_names is not None else sorted(set(labels))
    field = "label_names" if label_names is not None else "labels"
    problems = [p.replace("labels", field, 1) for p in label_problems(list(distinct))]
    InvalidInput.collect(problems, field)
    labels = nfc_labels(labels)
    if label_names is not None:
        label_names = nfc_labels(label_names)
        unknown = sorted(set(labels) - set(label_names))
        if unknown:
            raise InvalidInput(f"labels {unknown[:10]} are not in label_names {label_names[:20]}")
    return labels, label_names


def _png_b64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
