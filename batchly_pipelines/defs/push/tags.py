"""The run tags of push runs: ``sync_queue_sensor`` sets them, ``dagster.yaml`` allows one run per ``batchly/realm``
value, and the dead-run check reads them."""

REALM_TAG = "batchly/realm"
ORGANIZATION_TAG = "batchly/organization"
