"""Helpers shared by tests/ and bench/ (process trees, a local RTSP server). Not part of the installed package."""
