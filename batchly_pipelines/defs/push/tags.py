"""The run tags of push runs: ``sync_queue_sensor`` sets them (a batch of one organisation, a "Sync now" run: realm and
organisation; every batch: its size), ``dagster.yaml`` allows one run per ``batchly/realm``
value, and the dead-run check reads them."""

REALM_TAG = "batchly/realm"
ORGANIZATION_TAG = "batchly/organization"
BATCH_TAG = "batchly/push_batch"  # how many organisations a batched push run works on
