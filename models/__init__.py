"""Model families (forecasting, lead scoring, sentiment), installed as ``neuracrm_mlops.models``.

Each family's public face is ``<family>_model.py``, exposing ``train`` and ``predict``; the shared
``evaluate`` lives in the library so that the 80% accuracy rule means the same for every family.
Forecasting and lead scoring keep their code in packages (``forecasting/``, ``lead_scoring/``) behind
their faces, which are also the import path of the classes registered models pickle
(``pickling.py``). ``pyfunc_wrappers`` are the MLflow pyfuncs of all three.
"""
