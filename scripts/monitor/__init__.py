"""The regulator's monitor (``medtrail-monitor``): follows the log and the chain, verifies
what is new as the audit does, alerts, and serves the supervision console."""
