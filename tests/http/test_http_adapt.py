"""POST /adapters/{task}/adapt on the real server: a job whose new version (CORAL folded into
the head, a pseudo-labelled LoRA, or the target prior folded into the bias) goes through the
same gate as a fit: shadow by default, if_better on labelled target examples; bad requests
get a 4xx naming the problem."""

from __future__ import annotations


import pytest

from support.http_helpers import wait_for_job
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.server

POS = ["good", "a great movie", "fine fine", "good good good", "great", "a fine film indeed"]
NEG = ["the plot was awful and boring", "bad bad bad bad bad", "awful awful awful awful awful awful",
       "boring boring boring boring boring", "it was bad and it was long and dull", "dull dull dull dull"]


def shifted(texts):
    """The target domain: the same words in a longer frame (a shift in the pooled features)."""
    return [f"this story this plot {t} it was the film the story" for t in texts]


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory):
    return server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir))


def run_job(srv, task: str, route: str, body: dict, timeout_s: float = 180) -> dict:
    r = srv.post(f"/adapters/{task}/{route}", admin=True, json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == route and job["status"] == "queued"
    return wait_for_job(srv, job["id"], timeout_s)


@pytest.fixture(scope="module")
def reviews(srv):
    texts = (POS * 2) + (NEG * 2)
    job = run_job(srv, "reviews", "fit", {"texts": texts, "labels": ["pos"] * 12 + ["neg"] * 12,
                                          "options": {"epochs": 60}})
    assert job["status"] == "succeeded", job
    return job["result"]["version"]


def test_adapt_registers_a_shadow_candidate_recording_its_source(srv, reviews):
    target = shifted(POS * 2 + NEG * 2)
    job = run_job(srv, "reviews", "adapt", {"texts": target})
    assert job["status"] == "succeeded", job
    res = job["result"]
    assert res["role"] == "shadow" and not res["promoted"] and res["version"] != reviews
    rec = res["adaptation"]
    assert rec["method"] == "coral" and rec["source_version"] == reviews and rec["target_data"]["inputs"] == 24
    assert "recorded in the source adapter" in rec["source_statistics"]
    rollout = srv.get("/adapters/reviews/rollout").json()
    assert rollout["mode"] == "shadow" and rollout["candidate_version"] == res["version"]
    r = srv.post("/predict", json={"task": "reviews", "texts": target[:4]})
    assert r.status_code == 200 and r.json()["results"][0]["version"] == reviews  # the active one answers
    assert srv.get("/adapters/reviews/rollout").json()["shadow"][0]["rows"] == 4
    assert srv.delete("/adapters/reviews/rollout", admin=True).json()["mode"] == "none"


def test_adapt_if_better_compares_on_the_labelled_target_examples(srv, reviews):
    val = shifted(POS + NEG)
    job = run_job(srv, "reviews", "adapt", {"texts": shifted(POS * 2 + NEG * 2), "promote": "if_better",
                                            "val_texts": val, "val_labels": ["pos"] * 6 + ["neg"] * 6})
    assert job["status"] == "succeeded", job
    cmp = job["result"]["comparison"]
    assert cmp["active_version"] == reviews
    better = cmp["candidate_val_accuracy"] > cmp["active_val_accuracy"]
    assert job["result"]["promoted"] is better
    assert job["result"]["metrics"]["val_examples"] == 12


def test_pseudo_label_adapt_registers_a_lora_shadow_candidate(srv, reviews):
    target = shifted(POS * 2 + NEG * 2)
    job = run_job(srv, "reviews", "adapt", {"texts": target, "method": "pseudo_label", "epochs": 2})
    assert job["status"] == "succeeded", job
    res = job["result"]
    assert res["role"] == "shadow" and not res["promoted"] and res["version"] != reviews
    rec = res["adaptation"]
    assert rec["method"] == "pseudo_label" and rec["kind"] == "lora" and rec["source_version"] == reviews
    assert rec["target_data"]["inputs"] == 24 and rec["trunk_changed"] is True
    shown = srv.get("/adapters/reviews").json()
    assert any(v["version"] == res["version"] and v["kind"] == "lora" for v in shown["versions"]), shown
    # the shadow LoRA version scores the same rows beside the active head, which answers
    r = srv.post("/predict", json={"task": "reviews", "texts": target[:4]})
    assert r.status_code == 200 and r.json()["results"][0]["version"] == reviews
    assert srv.get("/adapters/reviews/rollout").json()["shadow"][0]["rows"] == 4
    assert srv.delete("/adapters/reviews/rollout", admin=True).json()["mode"] == "none"


def test_if_better_refuses_a_pseudo_label_version_that_is_worse(srv, reviews):
    """Self-training on target inputs of one class only, with a large step, drags every
    input towards that class: worse on balanced labelled examples, so never promoted."""
    job = run_job(srv, "reviews", "adapt", {
        "texts": shifted(NEG * 4), "method": "pseudo_label", "epochs": 20, "lr": 0.05, "keep_fraction": 1,
        "promote": "if_better", "val_texts": POS + NEG, "val_labels": ["pos"] * 6 + ["neg"] * 6})
    assert job["status"] == "succeeded", job
    cmp = job["result"]["comparison"]
    assert cmp["active_version"] == reviews
    assert cmp["candidate_val_accuracy"] < cmp["active_val_accuracy"], cmp
    assert job["result"]["promoted"] is False
    assert srv.get("/adapters/reviews").json()["active_version"] == reviews


def test_label_shift_adapt_registers_a_head_shadow_candidate_with_the_estimated_prior(srv, reviews):
    target = shifted(NEG * 3 + POS)  # three quarters negative; the source was balanced
    job = run_job(srv, "reviews", "adapt", {"texts": target, "method": "label_shift"})
    assert job["status"] == "succeeded", job
    res = job["result"]
    assert res["role"] == "shadow" and not res["promoted"] and res["version"] != reviews
    rec = res["adaptation"]
    assert rec["method"] == "label_shift" and rec["kind"] == "head" and rec["source_version"] == reviews
    assert rec["target_data"]["inputs"] == 24 and rec["settings"]["em_iterations"] == 100
    prior = rec["label_shift"]["target_prior"]
    assert set(prior) == {"neg", "pos"} and prior["neg"] > rec["label_shift"]["source_prior"]["neg"]
    assert srv.delete("/adapters/reviews/rollout", admin=True).json()["mode"] == "none"


def test_if_better_refuses_a_label_shift_version_that_is_worse(srv, reviews):
    """Target inputs of one class only: EM puts (nearly) all the prior on it and the folded bias
    moves answers only towards it, so on positive labelled examples, some of them mixed words
    the source head calls positive by a small margin, the candidate is worse: never promoted."""
    val = shifted(POS + ["good bad", "great awful", "fine boring", "a good and bad film", "bad good",
                         "awful great", "good dull", "boring fine"])
    job = run_job(srv, "reviews", "adapt", {
        "texts": shifted(NEG * 4), "method": "label_shift", "promote": "if_better",
        "val_texts": val, "val_labels": ["pos"] * len(val)})
    assert job["status"] == "succeeded", job
    assert job["result"]["adaptation"]["label_shift"]["target_prior"]["neg"] > 0.9
    cmp = job["result"]["comparison"]
    assert cmp["active_version"] == reviews
    assert cmp["candidate_val_accuracy"] < cmp["active_val_accuracy"], cmp
    assert job["result"]["promoted"] is False
    assert srv.get("/adapters/reviews").json()["active_version"] == reviews


@pytest.mark.parametrize("body,status,message", [
    ({"texts": ["a text"] * 5}, 422, "at least 20"),
    ({"texts": ["a text"] * 20, "promote": "if_better"}, 422, "needs labelled target examples"),
    ({"texts": ["a text"] * 20, "val_texts": ["x", "y"], "val_labels": ["pos"]}, 422, "2 labelled target examples but 1"),
    ({"texts": ["a text"] * 20, "source_images": ["aGk=", "aGk="]}, 422, "same kind"),
    ({"texts": ["a text"] * 20, "method": "dann"}, 422, "coral"),
    ({"texts": ["a text"] * 20, "method": "pseudo_label", "epochs": 0}, 422, "epochs"),
    ({"texts": ["a text"] * 20, "method": "pseudo_label", "keep_fraction": 2}, 422, "keep_fraction"),
    ({"texts": ["a text"] * 20, "method": "label_shift", "em_iterations": 0}, 422, "em_iterations"),
    ({"texts": ["a text"] * 20, "method": "label_shift+coral"}, 422, "coral+label_shift"),
    ({"texts": ["a text"] * 20, "val_texts": ["x"], "val_labels": ["maybe"]}, 400, "not labels of 'reviews'"),
    ({"texts": ["a text"] * 19 + [""]}, 400, "texts[19] is empty"),
    ({"texts": ["a text"] * 20, "source_texts": ["fine", " "]}, 400, "source_texts[1] is empty"),
])
def test_bad_adapt_requests_get_a_4xx_naming_the_problem(srv, reviews, body, status, message):
    r = srv.post("/adapters/reviews/adapt", admin=True, json=body)
    assert r.status_code == status, r.text
    assert message in r.text


def test_adapt_needs_a_task_and_the_admin_token(srv, reviews):
    r = srv.post("/adapters/nosuch/adapt", admin=True, json={"texts": ["a text"] * 20})
    assert r.status_code == 404 and "no active version to adapt" in r.text
    assert srv.post("/adapters/reviews/adapt", json={"texts": ["a text"] * 20}).status_code == 401
