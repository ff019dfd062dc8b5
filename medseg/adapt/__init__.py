"""Adapting trained models to new data: parameter-efficient fine-tuning and test-time (source-free) adaptation."""
