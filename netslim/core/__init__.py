"""Shared building blocks used by every pruning method: the method registry and model history."""
