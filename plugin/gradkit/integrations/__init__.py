"""Integrations with training frameworks (only Ultralytics for now)."""
