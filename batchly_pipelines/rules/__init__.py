"""Pure sync domain logic: QuickBooks ⇄ Batchly mapping, three-way merge and ownership, customer matching,
payment status, validation before a push, idempotency keys. No I/O, no Dagster: records in, decisions out."""
