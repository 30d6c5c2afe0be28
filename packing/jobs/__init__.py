"""Offline jobs that run on a Ray cluster (``packed-bert batch``)."""
