"""Durable jobs: queue backends, tasks, workers, webhooks and batch runs (issue 5).

Modules (each with one job):

* ``model`` — Job/Delivery records, states, QueueFull (429) / JobNotFound (404) / JobGone (410);
* ``queue`` — the JobQueue contract; backends ``sqlite_queue``, ``postgres_queue`` (shared
  logic in ``sql_queue``), ``redis_queue`` (Redis Streams) and ``nats_queue`` (NATS
  JetStream; its plumbing in ``nats_wire``, its webhook outbox in ``nats_outbox``);
  ``backends`` — ``open_queue(url)``;
* ``taskspec`` — the steps a task runs (``task_chain``), the built-in tasks and the configured
  ones overlaid on them (``task_specs``); the declarations (TaskSpec: prompt/chain, model or
  task route, JSON schema, confidence) are config, in :mod:`lockgate.settings.jobs`;
* ``tasks`` — TaskRunner (runs a task through the gateway pipeline, validates the answer);
* ``worker`` — Worker (bounded concurrency, lease heartbeats, graceful stop, retries/DLQ);
  ``embedded`` — a worker inside the gateway process (``lockgate up``);
* ``submission`` — JobService: submit/get/cancel for the HTTP adapter and CLI
  (the composition root :class:`lockgate.runtime.Runtime` builds the queue, JobService,
  OpenAIBatchService and QueueMonitor of a process as ``Runtime.jobs``);
* ``webhooks`` — HMAC-SHA256 signed POSTs (no redirects); ``outbox`` — completion webhooks
  from the queue's outbox (at least once, stable delivery id, backoff, webhook DLQ);
  ``ssrf`` — the SSRF guard for webhook URLs (every resolved address, at submit and at
  each connection); ``monitor`` — gauges, alerts, result expiry (the ``jobs:`` config
  section is :mod:`lockgate.settings.jobs`);
* ``batch`` — resumable file batches; ``openai_batch`` — the OpenAI Batch API shape, stored
  in the store by ``batch_records`` (files, row-locked batches, result lines).
"""
