"""Helpers shared by the tests: a real origin server and raw HTTP clients."""
