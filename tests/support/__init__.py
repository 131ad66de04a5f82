"""Test support code shared by the integration, fault and load suites (not tests themselves)."""
