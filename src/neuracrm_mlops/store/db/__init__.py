"""The CRM store and platform tables: schema, engines, migrations."""
