"""Data quality: the Great Expectations suites (validation) and the drift and bias statistics."""
