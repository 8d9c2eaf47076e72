"""The one schema, as SQLAlchemy Core tables; Alembic migrations in `migrations/` create it."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("redaction", sa.String(16), nullable=False, server_default="redact"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # "tenant": identifiers keyed per tenant; "server": a tenant from before that, keyed server-wide.
    sa.Column("pseudonyms", sa.String(16), nullable=False, server_default="server"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # Only a SHA-256 of the key is kept: a leaked database does not leak working keys.
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=True),
    # ingest | reviewer | operator (tenant keys) or admin (tenant_id NULL); see repository.Role.
    sa.Column("role", sa.String(16), nullable=False, server_default="operator"),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    # Dashboard logins: only a SHA-256 of the cookie's token is kept, and the session names the key it
    # came from, so revoking that key ends the session too (and the key's role is the session's).
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.String(64), sa.ForeignKey("api_keys.key_hash"), nullable=False),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_dashboard_sessions_key", "key_hash"),
)

interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(256), nullable=True),
    sa.Column("session_id", sa.String(256), nullable=True),
    sa.Column("messages", sa.JSON, nullable=False),
    sa.Column("response", sa.Text, nullable=False),
    sa.Column("choices", sa.JSON, nullable=False),
    sa.Column("model", sa.String(256), nullable=True),
    sa.Column("adapter_version", sa.String(128), nullable=True),
    sa.Column("arm", sa.String(32), nullable=True),
    sa.Column("experiment_id", sa.String(64), nullable=True),
    sa.Column("decoding", sa.JSON, nullable=True),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_interactions_tenant_created", "tenant_id", "created_at"),
    sa.Index("ix_interactions_tenant_experiment", "tenant_id", "experiment_id"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    # The primary key is the client's event id within the tenant: it is the idempotency record,
    # written in the same statement as the event itself.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("interaction_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("rater", sa.String(256), nullable=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_feedback_tenant_interaction", "tenant_id", "interaction_id"),
    sa.Index("ix_feedback_tenant_received", "tenant_id", "received_at"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    # seq is assigned by us, not autoincrement: two writers racing for the same seq collide on the
    # primary key instead of forking the hash chain.
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("tenant_id", sa.String(64), nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(256), nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
    # A servable adapter version is "base + optional adapter + optional system prompt + decoding";
    # reward models live here too so gates and amplification can name the one they used.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("base_model", sa.String(256), nullable=False),
    sa.Column("base_model_hash", sa.String(64), nullable=True),
    sa.Column("snapshot_hash", sa.String(64), nullable=True),
    sa.Column("artifact_path", sa.Text, nullable=True),
    sa.Column("artifact_checksums", sa.JSON, nullable=True),
    sa.Column("system_prompt", sa.Text, nullable=True),
    sa.Column("decoding", sa.JSON, nullable=True),
    sa.Column("job_spec", sa.JSON, nullable=True),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Column("gate_report", sa.Text, nullable=True),
    sa.Column("parent_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # Set when a user it was trained on was erased: such a version never serves again (privacy/erasure.py).
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_versions_tenant_state", "tenant_id", "kind", "state"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    # A frozen dataset: rows live in Parquet under TUNELOOP_HOME; this row is the index and lineage.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Set when erasure or retention rewrote its files without some rows: `hash` then names, no longer
    # matches, the content.
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
)

experiments = sa.Table(
    "experiments",
    metadata,
    # The canary controller's whole state: a restarted server reads it back and carries on.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("control_version", sa.String(64), nullable=True),
    sa.Column("treatment_version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("share", sa.Float, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("decision", sa.JSON, nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    # A multi-arm experiment's arms ({arm, version, weight, state}, control first); null for a canary.
    sa.Column("arms", sa.JSON, nullable=True),
    sa.Index("ix_experiments_tenant_state", "tenant_id", "state"),
)

loop_turns = sa.Table(
    "loop_turns",
    metadata,
    # One row per turn of the loop; `stage` is where a restarted controller picks the turn up again.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("turn", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
)

alerts = sa.Table(
    "alerts",
    metadata,
    # Monitor findings (drift, KPI breaches) waiting for the loop: open until a turn handles them.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("statistic", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("p_value", sa.Float, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("handled_by", sa.String(256), nullable=True),
    sa.Index("ix_alerts_tenant_status", "tenant_id", "status"),
)

drift_checks = sa.Table(
    "drift_checks",
    metadata,
    # Every drift check's full report (tests, windows, chart data), so the dashboard shows the last one.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("drifted", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_drift_checks_tenant_created", "tenant_id", "created_at"),
)

loop_pauses = sa.Table(
    "loop_pauses",
    metadata,
    # A row while an operator has paused the tenant's loop (`tuneloop loop pause`); resuming deletes it.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("paused_by", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
)

loop_leases = sa.Table(
    "loop_leases",
    metadata,
    # Which loop worker advances the tenant's turn until `expires_at` (store/leases.py); `token` grows with
    # every acquisition, so a worker that lost the lease can tell. holder NULL: free.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=True),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

review_tasks = sa.Table(
    "review_tasks",
    metadata,
    # A human review task: what reviewers judge (kind), how (guidelines) and how many judge each item.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("guidelines", sa.Text, nullable=False),
    sa.Column("overlap", sa.Integer, nullable=False),
    sa.Column("assignment_minutes", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

review_items = sa.Table(
    "review_items",
    metadata,
    # One thing to judge: an interaction's answer, or two answers (its first two choices, or it and
    # `other_interaction_id`); `reason` says why the queue chose it, `priority` orders the queue.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("interaction_id", sa.String(128), nullable=False),
    sa.Column("other_interaction_id", sa.String(128), nullable=True),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("added_by", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_review_items_tenant_task", "tenant_id", "task_id"),
)

review_assignments = sa.Table(
    "review_assignments",
    metadata,
    # Who was handed which item and until when; the label once given (also written as a feedback event).
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("reviewer", sa.String(64), primary_key=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("label", sa.JSON, nullable=True),
    sa.Column("event_id", sa.String(128), nullable=True),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_review_assignments_tenant_task", "tenant_id", "task_id"),
)

documents = sa.Table(
    "documents",
    metadata,
    # A document of the tenant's retrieval collection, at its current version; its text lives in `chunks`.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("chars", sa.Integer, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

chunks = sa.Table(
    "chunks",
    metadata,
    # A redacted slice [start_char, end_char) of a document version's text with its MiniLM vector; `key` is
    # its id in the tenant's vector index (a 63-bit hash of the chunk id; retrieve/index.py).
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("key", sa.BigInteger, nullable=False),
    sa.Column("document_id", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("start_char", sa.Integer, nullable=False),
    sa.Column("end_char", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Index("ix_chunks_tenant_document", "tenant_id", "document_id"),
    sa.Index("ix_chunks_tenant_key", "tenant_id", "key"),
)

collections = sa.Table(
    "collections",
    metadata,
    # One row per tenant with documents: `revision` grows with every change, so each process's index
    # knows when to catch up with the store.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

retrievals = sa.Table(
    "retrievals",
    metadata,
    # What one retrieval showed, in order, with each result's features; no query text is kept. Feedback on
    # sources names `interaction_id` (the chat completion, or the id the app gave /v1/retrieve).
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("interaction_id", sa.String(128), nullable=True),
    sa.Column("ranker", sa.String(64), nullable=False),
    sa.Column("results", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_retrievals_tenant_interaction", "tenant_id", "interaction_id"),
    sa.Index("ix_retrievals_tenant_created", "tenant_id", "created_at"),
)

pending_feedback = sa.Table(
    "pending_feedback",
    metadata,
    # Feedback that arrived before its interaction (capture/pending.py): the redacted event waits here until
    # its target (an interaction id, or `session:` and a stored session id) is logged, or until expires_at.
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("target", sa.String(300), nullable=False),
    sa.Column("event", sa.JSON, nullable=False),
    sa.Column("payload_hash", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_pending_feedback_tenant_target", "tenant_id", "target"),
    sa.Index("ix_pending_feedback_tenant_expires", "tenant_id", "expires_at"),
)
