"""Where the platform keeps things: the CRM tables (db), imports, organizations and API keys,
the synthetic CRM, the MLflow model registry, the alert records and the promotion ledger."""
