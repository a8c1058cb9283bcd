"""Builders of tiny fake copies of the official benchmark layouts (see :mod:`tests.fakes.benchmarks`)."""
