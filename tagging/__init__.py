"""Tagging new music with trained models: model sources and window scoring."""
