"""Shared test support: launchers for the emulator and the operator."""
