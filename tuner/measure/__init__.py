"""Measuring a deployed candidate under load."""
