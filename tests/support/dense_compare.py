"""Row-by-row equality of two results of a dense (or classification) task, as the mixed-batch
equivalence tests need it: the same labels, scores within ``tol``, boxes within 0.01 px (they
are rounded to 0.01), the same mask bytes and shares."""

from __future__ import annotations

import numpy as np

TOL = 1e-5


def same_rows(got, ref, tol: float = TOL) -> None:
    for g, r in zip(got.rows, ref.rows):
        if r.boxes is not None:
            assert [b["label"] for b in g.boxes] == [b["label"] for b in r.boxes]
            for a, b in zip(g.boxes, r.boxes):
                assert abs(a["score"] - b["score"]) < tol
                assert np.allclose(a["box"], b["box"], atol=1e-2)
        elif r.shares is not None:
            assert g.mask_png == r.mask_png
            assert all(abs(g.shares[k] - r.shares[k]) < tol for k in r.shares)
        else:
            assert g.label == r.label and abs(g.score - r.score) < tol
