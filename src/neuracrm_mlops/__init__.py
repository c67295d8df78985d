"""neuracrm-mlops: the batch MLOps platform behind NeuraCRM's AI features."""

__version__ = "0.1.0"
