"""Intuit webhooks: the receiver's intake into the inbox, and the targeted pulls that drain it (docs/webhooks.md)."""
