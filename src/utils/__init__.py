"""Reusable pieces of the entry points: building from config, reports, checks, seeding."""
