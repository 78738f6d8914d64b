"""Bundled sample market data (package data read by ``envs.data.datasets``); see README.md here."""
