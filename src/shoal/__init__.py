"""Shoal: a distributed job queue."""
