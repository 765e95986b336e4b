"""Circuits: IOI metrics, activation and path patching, circuit discovery and evaluation."""
