"""Tests of the regulator's tools (the ``scripts`` package: ``medtrail-verify-trail`` and
``medtrail-audit-log``, or ``python scripts/<tool>.py``)."""
