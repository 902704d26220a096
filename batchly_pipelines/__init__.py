"""Batchly <-> QuickBooks Online sync."""
