"""Intraday loads of the open day: its ledger of loads, the keys already live, the schedule."""
