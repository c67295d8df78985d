"""Operating the platform: the CLI, the demo and local stack, the model health page, the DAG task
bodies (pipelines, dag_support), status and Airflow asset events."""
