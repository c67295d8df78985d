"""The serving core: loading live models, answering predictions, the prediction log, the
forecast cache, request limits and routing. The BentoML service (neuracrm_mlops.serving) is a thin
layer over it."""
