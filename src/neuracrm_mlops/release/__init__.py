"""Release: canary rollouts by traffic share and by organization cohort, their pure decisions,
the atomic rollout state, live statistics and outcomes."""
