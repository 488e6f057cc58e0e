"""Change-data-capture on an existing database (a feature: changes become pipeline tasks).

``lockgate cdc install`` puts triggers and an outbox into the user's PostgreSQL or
MariaDB/MySQL database (:mod:`.postgres`, :mod:`.mariadb`); ``lockgate cdc run`` runs a
:class:`CdcConsumer` that turns each change into a task through the pipeline and writes the
result back (a column, a side table) or publishes an event; ``lockgate cdc uninstall``
removes everything install added. lockgate's own store keeps the dedup record and the DLQ
(:class:`CdcLedger`, tables ``cdc_applied`` / ``cdc_dead``).

What holds: at-least-once delivery with effects applied once (write-back + outbox delete in
one transaction; events carry the change id), per-row order across consumers, SIGKILL
safety (leases, extended while a task runs), poison changes to the DLQ, write-backs that
never re-trigger, NOTIFY wake-up on PostgreSQL with polling everywhere. INSERT, UPDATE and
(with ``--ops``) DELETE are captured; a delete removes or marks the row's side-table results,
runs the task on its old values, or is published as a ``deleted`` event (``on_delete``).
Several consumers may run one capture: trigger captures split the work (SKIP LOCKED claims
of each row's oldest change), wal2json captures elect a leader (advisory lock) and fail over.
The PostgreSQL logical-decoding source (:mod:`.wal2json`, ``--source wal2json``) needs
``wal_level=logical`` on the server.
"""

from lockgate.cdc.consumer import CdcConsumer, CdcStats, Destination, task_transform
from lockgate.cdc.database import CdcDatabase, open_database
from lockgate.cdc.install import install_capture
from lockgate.cdc.ledger import CdcLedger
from lockgate.cdc.model import CaptureSpec, Change, WriteBack
from lockgate.cdc.sqltext import CdcSqlError

__all__ = [
    "CaptureSpec",
    "CdcConsumer",
    "CdcDatabase",
    "CdcLedger",
    "CdcSqlError",
    "CdcStats",
    "Change",
    "Destination",
    "WriteBack",
    "install_capture",
    "open_database",
    "task_transform",
]
