#!/bin/bash
# Runs once, when the postgres service starts on an empty data volume (docker-entrypoint-initdb.d):
# one role and one database per store, each role owning its database.
#   crm     the CRM store and platform tables (NEURACRM_DB_URL)
#   mlflow  the MLflow tracking and registry store
#   airflow the Airflow metadata database
# The passwords come from the environment of the postgres service (see docker-compose.yml).
# Changing them later in .env does not change them here: use ALTER ROLE ... PASSWORD.
set -euo pipefail

: "${CRM_DB_PASSWORD:?CRM_DB_PASSWORD is not set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v crm_password="$CRM_DB_PASSWORD" \
    -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v airflow_password="$AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE crm LOGIN PASSWORD :'crm_password';
CREATE DATABASE crm OWNER crm;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
SQL
