"""The per-company full reconciliation (issue 10's safety net): compare a whole QuickBooks company with Batchly,
repair what the rules allow, list the rest (:func:`~.company.reconcile_company`)."""
