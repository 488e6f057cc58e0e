"""Durable jobs: queue backends, tasks, workers, webhooks and batch runs (issue 5).

Public entry points: :func:`lockgate.jobs.queue.open_queue`,
:class:`lockgate.jobs.worker.Worker`, :class:`lockgate.jobs.tasks.TaskRunner`.
"""
