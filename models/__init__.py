"""Model families (forecasting, lead scoring, sentiment), installed as ``neuracrm_mlops.models``.

Each family module is named ``<family>_model.py`` and exposes ``train`` and ``predict``; the shared
``evaluate`` lives in the library so that the 80% accuracy rule means the same for every family.
"""
