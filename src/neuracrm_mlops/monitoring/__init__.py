"""Monitoring: the scheduled pass over live accuracy, drift and bias, and alert delivery."""
