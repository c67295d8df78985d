"""BentoML services, installed as ``neuracrm_mlops.serving``.

Model loading and routing live in the library; the services stay thin and typed.
"""
